"""Where the live appliance listens and which API key it wants, as an operator would find out.

Order for each base URL: the command-line flag, the environment (``API_URL`` /
``MAILBOX_API_URL``), ``DATA_DIR/ports.json`` (written by the running appliance) with
the ``SMTP_HOST`` setting, then the configured ``API_PORT`` / ``MAILBOX_API_PORT`` on
127.0.0.1. The key: the flag, ``MAILBOX_API_KEY`` (environment or ``.env``), then
``DATA_DIR/api-key`` (the key the appliance generated). Nothing here writes a file.
"""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from mailappliance.settings import Settings, SettingsError
from mailappliance.tools.probe import connection_reason

WEAK_API_KEYS = {"", "changeme"}  # the appliance replaces these with DATA_DIR/api-key
DEFAULT_TIMEOUT = 10.0

# ports.json key -> (Settings attribute of the port, attribute that must be true or None)
LISTENERS: dict[str, tuple[str, Optional[str]]] = {
    "smtp": ("smtp_port", None),
    "submission": ("submission_port", None),
    "smtps": ("smtps_port", None),
    "lmtp": ("lmtp_port", None),
    "lmtps": ("lmtp_ssl_port", "lmtp_ssl_enabled"),
    "imap": ("imap_port", None),
    "imaps": ("imap_ssl_port", "imap_ssl_enabled"),
    "api": ("api_port", None),
    "mailbox-api": ("mailbox_api_port", None),
}


class ConfigError(RuntimeError):
    """A setting the tools need is missing or unusable (usage problem: exit 2)."""


class Unreachable(RuntimeError):
    """Nothing answered where the tools looked (exit 3)."""


class ApiRefused(RuntimeError):
    """The appliance answered with an error status (exit 1)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_settings() -> Settings:
    """The appliance's settings from the environment and ``.env`` (``DOTENV_PATH``)."""
    try:
        try:
            return Settings.from_env()
        except ImportError:  # python-dotenv missing: the environment alone
            return Settings.from_env(dict(os.environ))
    except SettingsError as exc:
        raise ConfigError(f"bad setting: {exc}") from None


def client_host(bind: str) -> str:
    """The address to connect to for a listener bound to ``bind`` (wildcards mean loopback)."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind in ("::", "[::]"):
        return "::1"
    return bind


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass
class Endpoints:
    """Ports of the live appliance: ``ports.json`` when it exists, else the settings."""

    settings: Settings
    host: str
    ports: dict[str, int]  # listener name -> port; 0 = off; -1 = "auto" with no ports.json
    from_file: Optional[Path]

    @classmethod
    def discover(cls, settings: Optional[Settings] = None, host: Optional[str] = None, ports_file: Optional[Path] = None) -> "Endpoints":
        s = settings or load_settings()
        path = ports_file or s.data_dir / "ports.json"
        written: Optional[dict[str, Any]] = None
        if path.exists():
            try:
                written = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from None
        elif ports_file is not None:
            raise ConfigError(f"no such file: {ports_file}")
        ports: dict[str, int] = {}
        for name, (attribute, enabled) in LISTENERS.items():
            configured = int(getattr(s, attribute))
            if enabled is not None and not getattr(s, enabled):
                configured = 0
            if written is not None:
                # The running appliance lists every listener it started; absent means off.
                ports[name] = int(written.get(name) or 0)
            else:
                ports[name] = configured
        return cls(s, host or client_host(s.host), ports, path if written is not None else None)

    def port(self, name: str) -> int:
        return self.ports.get(name, 0)

    def http_url(self, name: str) -> str:
        port = self.port(name)
        if port == 0:
            raise ConfigError(f"the {name} listener is off (port 0); give its URL with --{name}-url")
        if port < 0:
            raise ConfigError(f"the {name} port is 'auto' and {self.settings.data_dir / 'ports.json'} does not exist: is the appliance running?")
        return f"http://{url_host(self.host)}:{port}"


def api_key(settings: Settings, given: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> str:
    """``given``, else ``MAILBOX_API_KEY`` unless it is a placeholder, else ``DATA_DIR/api-key``."""
    if given:
        return given
    environ = os.environ if env is None else env
    configured = (environ.get("MAILBOX_API_KEY") or settings.mailbox_api_key or "").strip()
    if configured not in WEAK_API_KEYS:
        return configured
    path = settings.data_dir / "api-key"
    try:
        key = path.read_text().strip()
    except OSError:
        raise ConfigError(f"no API key: set MAILBOX_API_KEY, pass --api-key, or run where {path} exists") from None
    if not key:
        raise ConfigError(f"{path} is empty")
    return key


class ApiClient:
    """JSON over HTTP with the ``x-api-key`` header (stdlib ``urllib``)."""

    def __init__(self, base_url: str, key: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def url(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        url = self.base_url + path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None and v != ""}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        return url

    def call(self, method: str, path: str, body: Optional[dict] = None, query: Optional[Mapping[str, Any]] = None, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"x-api-key": self.key, "accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        request = urllib.request.Request(self.url(path, query), data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # the appliance's own text says "missing or wrong API key" too: say it once
                raise ApiRefused(401, f"{method} {path}: 401 wrong API key (set MAILBOX_API_KEY or pass --api-key; "
                                      "the appliance's key is in its .env or DATA_DIR/api-key)") from None
            raise ApiRefused(exc.code, f"{method} {path}: {exc.code} {_error_message(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach the appliance at {self.base_url} ({_describe(reason)})") from None
        if raw:
            return payload
        try:
            return json.loads(payload) if payload else None
        except ValueError:
            raise ApiRefused(200, f"{method} {path}: the answer is not JSON (is {self.base_url} the appliance?)") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: Optional[dict] = None) -> Any:
        return self.call("POST", path, body=body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()
    except OSError:
        body = b""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and parsed.get("message"):
            message = str(parsed["message"])
            errors = parsed.get("errors")
            if isinstance(errors, dict):
                message += ": " + "; ".join(f"{k}: {v}" for k, v in errors.items())
            return message
    except ValueError:
        pass
    return exc.reason if isinstance(exc.reason, str) else "error"


def _describe(reason: object) -> str:
    if isinstance(reason, socket.gaierror):  # neither refused nor a timeout: the order is free
        return f"unknown host: {reason.strerror}"
    return connection_reason(reason) or str(reason) or type(reason).__name__
