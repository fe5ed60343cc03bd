# Shared by run.sh and test.sh: find Python >= 3.11 and keep .venv in step with pyproject.toml.
# Usage: ensure_venv EXTRAS   (EXTRAS: "" or "test")

ensure_python() {
    PYTHON=${PYTHON:-python3}
    if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
            PYTHON=/usr/bin/python3
        else
            echo "monitord needs Python >= 3.11 with venv: sudo apt-get install python3 python3-venv" >&2
            exit 2
        fi
    fi
}

ensure_venv() {
    local extras=$1 stamp want
    ensure_python
    want="$(cat pyproject.toml; echo "extras=$extras"; "$PYTHON" --version)"
    stamp=.venv/.monitord-installed
    if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
    printf '%s' "$want" > "$stamp"
}
