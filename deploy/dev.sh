#!/usr/bin/env bash
# Set up a development checkout and run it: the README's two commands.
#   deploy/dev.sh run    - virtual environment, a user, and the server on a simulated line
#   deploy/dev.sh test   - virtual environment, system packages, lint, types and the test suite
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv multimon-ng sox espeak-ng libasound2-dev libasound2-plugins alsa-utils gcc shellcheck chromium)
VENV=${VENV:-.venv}

need_apt() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        echo "Installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "dev.sh: missing system packages; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 2
    fi
}

venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e ".[test]"
}

case "${1:-}" in
    test)
        need_apt
        venv
        "$VENV/bin/ruff" check gateway tests bench
        "$VENV/bin/mypy" gateway
        set +e
        "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${@:2}"
        status=$?
        set -e
        # pytest's 5 is "no tests collected": for this suite that is a failure too.
        [ $status -eq 5 ] && echo "dev.sh: pytest collected no tests" >&2
        exit $status
        ;;
    run)
        need_apt
        venv
        exec "$VENV/bin/python" -m gateway.quickstart "${@:2}"
        ;;
    *)
        echo "usage: deploy/dev.sh run|test [args]" >&2
        exit 2
        ;;
esac
