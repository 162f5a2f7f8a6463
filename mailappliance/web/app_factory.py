"""Shared construction of a flask-restx API: key check, JSON errors, Swagger at /api/docs."""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, jsonify, redirect
from flask_restx import Api
from werkzeug.exceptions import HTTPException

from mailappliance.storage.queue import QueueStoreError
from mailappliance.web.auth import AUTHORIZATIONS, key_is_valid

log = logging.getLogger("mailappliance.web")

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Answers every /api operation may give, whatever its namespace declares.
COMMON_RESPONSES = {
    "401": "Missing or wrong API key (x-api-key header or api_key query parameter)",
    "503": "The database is unavailable; try again",
}


class DocumentedApi(Api):
    """An Api whose Swagger document declares, on every operation, the answers the app
    gives outside the resources (the key check, the database error handler)."""

    @property
    def __schema__(self) -> dict:
        schema = super().__schema__
        definitions = schema.setdefault("definitions", {})
        definitions.setdefault("Error", {"type": "object", "properties": {"message": {"type": "string"}}})
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method in HTTP_METHODS:
                    responses = operation.setdefault("responses", {})
                    for code, description in COMMON_RESPONSES.items():
                        responses.setdefault(code, {"description": description, "schema": {"$ref": "#/definitions/Error"}})
        return schema


def build_app(name: str, title: str, description: str, api_key: str) -> tuple[Flask, Api]:
    app = Flask(name)
    app.config["RESTX_MASK_SWAGGER"] = False
    app.config["ERROR_404_HELP"] = False
    app.config["JSON_SORT_KEYS"] = False
    blueprint = Blueprint(name + "_api", name, url_prefix="/api")
    api = DocumentedApi(
        blueprint,
        version="1.0",
        title=title,
        description=description,
        doc="/docs",
        authorizations=AUTHORIZATIONS,
        security=["apikey"],
    )

    @app.before_request
    def require_key():
        from flask import request

        path = request.path
        if not path.startswith("/api/") or path.startswith("/api/docs") or path == "/api/swagger.json" or path.startswith("/swaggerui/"):
            return None
        if not key_is_valid(api_key):
            return jsonify({"message": "missing or wrong API key (x-api-key header or api_key query parameter)"}), 401
        return None

    @api.errorhandler(Exception)
    def unexpected(error):  # pragma: no cover - exercised by fault tests
        if isinstance(error, HTTPException):
            return {"message": error.description}, error.code
        if isinstance(error, QueueStoreError):
            log.warning("database error in %s: %s", title, error)
            return {"message": "the database is unavailable; try again"}, 503
        log.exception("unexpected error in %s", title)
        return {"message": "internal error; see the appliance log"}, 500

    @app.after_request
    def no_sniffing(response):
        # Every answer keeps its declared type: /api/emails/<id>/raw serves bytes that
        # outside senders wrote (message/rfc822) and must never be sniffed into HTML.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.errorhandler(404)
    def not_found(error):
        return jsonify({"message": "not found"}), 404

    @app.errorhandler(405)
    def not_allowed(error):
        return jsonify({"message": "method not allowed"}), 405

    app.register_blueprint(blueprint)

    @app.get("/api/docs/")
    def docs_with_slash():
        return redirect("/api/docs", code=308)

    return app, api
