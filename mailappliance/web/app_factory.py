"""Shared construction of a flask-restx API: key check, JSON errors, Swagger at /api/docs."""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, jsonify, redirect
from flask_restx import Api
from werkzeug.exceptions import HTTPException

from mailappliance.storage.queue import QueueStoreError
from mailappliance.web.auth import AUTHORIZATIONS, key_is_valid

log = logging.getLogger("mailappliance.web")


def build_app(name: str, title: str, description: str, api_key: str) -> tuple[Flask, Api]:
    app = Flask(name)
    app.config["RESTX_MASK_SWAGGER"] = False
    app.config["ERROR_404_HELP"] = False
    app.config["JSON_SORT_KEYS"] = False
    blueprint = Blueprint(name + "_api", name, url_prefix="/api")
    api = Api(
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
