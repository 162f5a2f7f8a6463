"""Swagger 2.0 fields that may be ``null`` (``x-nullable``, which Swagger 2.0 lacks as a
keyword), so the served document describes responses truthfully."""
from __future__ import annotations

from flask_restx import fields


class _Nullable:
    def schema(self):
        schema = super().schema()  # type: ignore[misc]
        schema["x-nullable"] = True
        return schema


class NString(_Nullable, fields.String):
    pass


class NInteger(_Nullable, fields.Integer):
    pass


class NFloat(_Nullable, fields.Float):
    pass


class NBoolean(_Nullable, fields.Boolean):
    pass


class NRaw(_Nullable, fields.Raw):
    pass


class NNested(_Nullable, fields.Nested):
    def __init__(self, model, **kwargs):
        super().__init__(model, allow_null=True, **kwargs)
