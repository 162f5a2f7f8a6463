"""``python -m mailappliance.healthcheck``: exit 0 when the running appliance's ``/health``
says ok, 1 otherwise (the Docker image's HEALTHCHECK).

The port comes from ``DATA_DIR/ports.json`` (the API app, else the Mailbox API), so it
follows ``API_PORT=auto`` and still works when the API port is off; with both HTTP
ports off (gunicorn serves them) a live appliance process is enough.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 4.0


WILDCARDS = ("", "0.0.0.0", "::", "*")


def reachable_host(bound: object) -> str:
    """Where to reach the API: the address it is bound to (``SMTP_HOST``), or loopback
    when it listens on every address."""
    if not isinstance(bound, str) or bound in WILDCARDS:
        return "127.0.0.1"
    return f"[{bound}]" if ":" in bound else bound


def check(data_dir: Path) -> str | None:
    """None when healthy, else why not."""
    path = data_dir / "ports.json"
    try:
        ports = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"no {path}: the appliance is not running (or still starting)"
    port = ports.get("api") or ports.get("mailbox-api")
    if not port:
        pid = ports.get("pid")
        try:
            os.kill(int(pid), 0)
        except (TypeError, ValueError, ProcessLookupError):
            return f"the appliance of {path} (pid {pid}) is not running"
        except PermissionError:
            pass
        return None
    try:
        with urllib.request.urlopen(f"http://{reachable_host(ports.get('host'))}:{port}/health", timeout=TIMEOUT) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return f"/health answered {error.code}: {error.read()[:200].decode(errors='replace')}"
    except (OSError, ValueError) as exc:
        return f"/health on port {port}: {exc}"
    return None if body.get("status") == "ok" else f"/health: {body}"


def main() -> int:
    problem = check(Path(os.environ.get("DATA_DIR") or "data"))
    print(problem or "ok")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
