# Shared by scripts/test-*: run one check of mailappliance.tools.checks against a running
# appliance (sourced, not executed). Like scripts/run, it works from the repository root,
# so DATA_DIR (ports.json, api-key) and .env are found where the appliance keeps them.
# Python: $PYTHON, else .venv/bin/python (made by scripts/run), else python3; the checks
# need only the standard library (python-dotenv is used for .env when installed).
run_check() {
    local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local python="${PYTHON:-}"
    if [ -z "$python" ]; then
        if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
    fi
    command -v "$python" >/dev/null || { echo "scripts: $python not found (set PYTHON)" >&2; exit 2; }
    export MAILAPPLIANCE_CALLER_CWD="$PWD"
    export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
    cd "$root"
    exec "$python" -m mailappliance.tools.checks "$@"
}
