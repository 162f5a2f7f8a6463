"""gunicorn for mailappliance's HTTP apps, for operators who front them with their own
web server. The mail listeners stay in the appliance, started with its HTTP ports off:

    API_PORT=0 MAILBOX_API_PORT=0 python -m mailappliance &
    gunicorn -c config/gunicorn.conf.py                        # API + dashboard on API_PORT
    gunicorn -c config/gunicorn.conf.py mailappliance.wsgi:mailbox_app --bind 127.0.0.1:8080

Both read the same settings (environment and ``.env``) and database; see
``mailappliance/wsgi.py``. Environment knobs of this file (gunicorn's own options and
``GUNICORN_CMD_ARGS`` work too, and command-line flags win):

- ``GUNICORN_BIND``: ``host:port`` (default ``127.0.0.1:$API_PORT``; port 3000 when
  ``API_PORT`` is unset, 0 or ``auto``: the appliance's own API is then off);
- ``GUNICORN_WORKERS`` (or ``WEB_CONCURRENCY``): worker processes, default 2;
- ``GUNICORN_WORKER_CONNECTIONS``: simultaneous requests per gevent worker, default 1000.
"""
import os
import sys

# The repository (or /app in the image), so ``mailappliance`` imports without installing.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pythonpath = ROOT
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

wsgi_app = "mailappliance.wsgi:api_app"

# The same .env the appliance reads (Settings.from_env), so API_PORT there sets the bind.
try:
    from dotenv import load_dotenv

    load_dotenv(os.environ.get("DOTENV_PATH", ".env"), override=False)
except ImportError:  # pragma: no cover - python-dotenv is in requirements.txt
    pass


def _api_port() -> int:
    raw = os.environ.get("API_PORT", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 3000


bind = [os.environ.get("GUNICORN_BIND") or f"127.0.0.1:{_api_port()}"]
# gevent: one worker serves many requests at once. The worker monkey-patches itself
# after it forks, then imports mailappliance.wsgi, so each worker makes its own
# pymongo client; keep preload_app off so no client is ever made in the master.
worker_class = "gevent"
workers = int(os.environ.get("GUNICORN_WORKERS") or os.environ.get("WEB_CONCURRENCY") or 2)
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS") or 1000)
preload_app = False
timeout = 60
graceful_timeout = 30
keepalive = 5

# Access log on stdout, API keys (query or x-api-key header) replaced by ***.
accesslog = "-"
errorlog = "-"
logger_class = "mailappliance.gunicorn_logging.RedactingLogger"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
proc_name = "mailappliance-http"
# gunicorn 24+: no control socket (two instances, API and Mailbox API, would share its path).
control_socket_disable = True


def on_starting(server):
    """Before any worker forks: settings, database and API key, or one line saying why."""
    from mailappliance.wsgi import DeploymentError, check

    try:
        check()
    except DeploymentError as exc:
        # gunicorn prints a RuntimeError raised here as one "Error: ..." line and exits 1.
        raise RuntimeError(f"mailappliance: cannot serve: {exc}") from None


def worker_exit(server, worker):
    """Drain the worker's delivery writer (``POST /api/send``) before it exits."""
    from mailappliance.wsgi import shutdown

    shutdown()
