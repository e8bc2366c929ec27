#!/usr/bin/env bash
# Set up a development checkout and run it: the README's two commands.
#   deploy/dev.sh run    - virtual environment, a user, and the server on a simulated line
#   deploy/dev.sh test   - virtual environment, system packages, lint, types and the test suite
#   deploy/dev.sh test -m slow tests/test_load.py   - the rest goes to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# Serving on a simulated line needs Python's own packages only.
RUN_APT=(python3-venv)
# The tests also decode tones (multimon-ng), make them with another generator
# (sox, espeak-ng), build pyalsaaudio and drive ALSA, check the shell scripts
# and drive the console in a browser.
TEST_APT=(python3-venv multimon-ng sox espeak-ng libasound2-dev libasound2-plugins alsa-utils gcc shellcheck chromium)
VENV=${VENV:-.venv}

need_apt() {
    local missing=()
    for pkg in "$@"; do
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

# venv SPEC [STAMP...]: install the checkout as SPEC (".", ".[test]") unless one
# of the STAMP files in the venv holds the hash of this pyproject.toml, i.e. an
# install at least that complete was made from it; then write the first STAMP.
venv() {
    local spec=$1 hash stamp
    shift
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
    for stamp in "$@"; do
        if [ "$(cat "$VENV/$stamp" 2>/dev/null)" = "$hash" ]; then
            return 0
        fi
    done
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$spec"
    echo "$hash" > "$VENV/$1"
}

case "${1:-}" in
    test)
        need_apt "${TEST_APT[@]}"
        venv ".[test]" .dev-installed-test
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
        need_apt "${RUN_APT[@]}"
        # A venv set up for the tests has everything serving needs.
        venv . .dev-installed-run .dev-installed-test
        exec "$VENV/bin/python" -m gateway.quickstart "${@:2}"
        ;;
    *)
        echo "usage: deploy/dev.sh run|test [args]" >&2
        exit 2
        ;;
esac
