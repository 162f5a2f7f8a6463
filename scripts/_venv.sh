# Shared by scripts/run and scripts/test: make .venv and install a requirements file
# when it changed since the last install (sourced, not executed).
ensure_venv() {
    local requirements="$1"
    local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local venv="${VENV:-$root/.venv}"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || { echo "scripts: cannot create $venv (install python3-venv)" >&2; exit 1; }
    fi
    local stamp="$venv/.installed-$(basename "$requirements")"
    local wanted; wanted="$(cat "$root"/requirements*.txt | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/$requirements" \
            || { echo "scripts: pip install -r $requirements failed" >&2; exit 1; }
        echo "$wanted" > "$stamp"
    fi
    PYTHON="$venv/bin/python"
}
