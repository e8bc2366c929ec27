#!/usr/bin/env bash
# Install dtmf-gateway as a systemd service on Raspberry Pi OS Bookworm (Debian 12).
#
#   sudo deploy/install.sh                      install or upgrade, enable and (re)start
#   sudo deploy/install.sh --uninstall          remove the service and /opt/dtmf-gateway;
#                                               keep the config, users and recordings
#   sudo deploy/install.sh --uninstall --purge  remove those and the system user too
#   deploy/install.sh --root DIR                stage into DIR (or DESTDIR=DIR): files only;
#                                               apt-get, useradd, pip and systemctl are
#                                               printed as "would run: ..." instead
#
# Running it again is safe: packages and the user are added only when missing,
# the program and the unit are replaced, and an existing
# /etc/dtmf-gateway/gateway.toml is never touched.
#
# What goes where:
#   /opt/dtmf-gateway/               virtual environment (bin/dtmf-gateway), docs in share/doc
#   /etc/dtmf-gateway/gateway.toml   the configuration (root:dtmf-gateway 0640)
#   /etc/default/dtmf-gateway        environment overrides (GPIOZERO_PIN_FACTORY, ...)
#   /etc/tmpfiles.d/dtmf-gateway.conf  recordings older than 30 days are deleted
#   /var/lib/dtmf-gateway/           users.toml and recordings/ (the service's own)
#   /etc/systemd/system/dtmf-gateway.service
set -euo pipefail

NAME=dtmf-gateway
SERVICE_USER=dtmf-gateway
GROUPS_NEEDED=(gpio audio dialout)
SRC=$(cd "$(dirname "$0")/.." && pwd)
# espeak-ng speaks OzML <Speak>; the compiler and headers build pyalsaaudio.
APT_PACKAGES=(python3 python3-venv python3-dev gcc libasound2-dev alsa-utils espeak-ng)
# lgpio's Python binding builds against these where pip has no wheel for the
# board (Raspberry Pi OS has them; plain Debian 12 has neither, nor needs them).
APT_OPTIONAL=(liblgpio-dev swig)

ROOT=${DESTDIR:-}
ACTION=install
PURGE=0

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || usage 2; ROOT=$2; ROOT_GIVEN=1; shift 2 ;;
        --root=*) ROOT=${1#--root=}; ROOT_GIVEN=1; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
done
if [ -n "${DESTDIR+set}${ROOT_GIVEN:-}" ] && [ -z "$ROOT" ]; then
    echo "install.sh: the staging root is empty" >&2
    exit 2
fi
if [ "$PURGE" = 1 ] && [ "$ACTION" != uninstall ]; then
    echo "install.sh: --purge goes with --uninstall" >&2
    exit 2
fi

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    STAGING=1
else
    STAGING=0
fi

OPT=/opt/$NAME
ETC=/etc/$NAME
STATE=/var/lib/$NAME
UNIT=/etc/systemd/system/$NAME.service
DEFAULTS=/etc/default/$NAME
TMPFILES=/etc/tmpfiles.d/$NAME.conf
LINK=/usr/local/bin/$NAME
DOC=$OPT/share/doc/$NAME

say() { printf '%s\n' "$*"; }

# Commands that change the system outside the file tree: staged, they are shown.
run() {
    if [ "$STAGING" = 1 ]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# install(1) with an owner only on the real system (a staging root has no such user).
put() {
    local owner=$1
    shift
    if [ "$STAGING" = 1 ] || [ -z "$owner" ]; then
        install "$@"
    else
        install -o "${owner%%:*}" -g "${owner##*:}" "$@"
    fi
}

check_system() {
    [ "$STAGING" = 1 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: run as root (sudo), or stage with --root DIR" >&2
        exit 2
    fi
    command -v systemctl >/dev/null || { echo "install.sh: systemd is needed" >&2; exit 2; }
}

# Staged, the target is taken to be a fresh system: nothing of this host is asked.
installed() { [ "$STAGING" = 0 ] && dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
has_group() { [ "$STAGING" = 0 ] && getent group "$1" >/dev/null; }
has_user() { [ "$STAGING" = 0 ] && getent passwd "$1" >/dev/null; }

apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    for pkg in "${APT_OPTIONAL[@]}"; do
        if [ "$STAGING" = 0 ] && apt-cache show "$pkg" >/dev/null 2>&1 && ! installed "$pkg"; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "system packages: all present"
        return 0
    fi
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

system_user() {
    local group
    for group in "${GROUPS_NEEDED[@]}"; do
        # SupplementaryGroups= with a group that does not exist stops the unit
        # from starting; plain Debian has no gpio group.
        has_group "$group" || run groupadd --system "$group"
    done
    if ! has_user "$SERVICE_USER"; then
        run useradd --system --user-group --home-dir "$STATE" --no-create-home \
            --shell /usr/sbin/nologin --comment "dtmf-gateway service" "$SERVICE_USER"
    fi
    # The unit adds these groups itself; on the account they let an admin run
    # hardware self-tests as the service user (sudo -u dtmf-gateway ...).
    run usermod --append --groups "$(IFS=,; echo "${GROUPS_NEEDED[*]}")" "$SERVICE_USER"
}

python_env() {
    local extra=alsa
    case "$(uname -m)" in
        aarch64|armv7l|armv6l) extra=pi ;;  # a Raspberry Pi: lgpio for GPIO too
    esac
    if [ ! -x "$ROOT$OPT/bin/python" ]; then
        run python3 -m venv "$OPT"
    fi
    run "$OPT/bin/python" -m pip install --quiet --upgrade pip
    # Not editable: the service runs what was installed, not a checkout.
    run "$OPT/bin/python" -m pip install --quiet --upgrade "${SRC}[${extra}]"
}

files() {
    put "" -d -m 0755 "$ROOT$OPT" "$ROOT$DOC" "$ROOT$DOC/firmware-notes"
    put "" -m 0644 "$SRC/README.md" "$SRC/deploy/gateway.example.toml" "$ROOT$DOC/"
    local note
    for note in "$SRC"/firmware-notes/*.md; do
        [ -e "$note" ] && put "" -m 0644 "$note" "$ROOT$DOC/firmware-notes/"
    done

    put "root:$SERVICE_USER" -d -m 0750 "$ROOT$ETC"
    if [ -e "$ROOT$ETC/gateway.toml" ]; then
        say "kept $ETC/gateway.toml (the current example is $DOC/gateway.example.toml)"
    else
        # The example's relative paths would land in /etc, read-only to the
        # service: users and recordings live in its state directory.
        local tmp
        tmp=$(mktemp "$ROOT$ETC/.gateway.toml.XXXXXX")
        sed -e "s#^users_file = \"users.toml\"#users_file = \"$STATE/users.toml\"#" \
            -e "s#record_dir = \"recordings\"#record_dir = \"$STATE/recordings\"#g" \
            "$SRC/deploy/gateway.example.toml" >"$tmp"
        if ! grep -q "^users_file = \"$STATE/users.toml\"" "$tmp" ||
            ! grep -q "^record_dir = \"$STATE/recordings\"" "$tmp"; then
            rm -f "$tmp"
            echo "install.sh: the example config no longer has the users_file and" \
                "record_dir lines this script rewrites" >&2
            exit 1
        fi
        put "root:$SERVICE_USER" -m 0640 "$tmp" "$ROOT$ETC/gateway.toml"
        rm -f "$tmp"
        say "wrote $ETC/gateway.toml"
    fi

    if [ ! -e "$ROOT$DEFAULTS" ]; then
        put "" -d -m 0755 "$ROOT$(dirname "$DEFAULTS")"
        local tmp
        tmp=$(mktemp "$ROOT$(dirname "$DEFAULTS")/.$NAME.XXXXXX")
        cat >"$tmp" <<'EOF'
# Environment of the dtmf-gateway service (read by systemd; KEY=value lines).
#
# gpiozero's pin library. The unit sets lgpio, the one that works on every
# Pi under Bookworm and the only one on a Pi 5 (RPi.GPIO fails there with
# "Cannot determine SOC peripheral base address"). "mock" runs GPIO lines
# without hardware.
#GPIOZERO_PIN_FACTORY=lgpio
#
# numpy's thread pools: one thread each, as the unit sets (the gateway's numpy
# work runs on threads of its own; a pool per core only spins).
#OPENBLAS_NUM_THREADS=1
#
# The core the gateway keeps to is the last it may use; choose it with
# CPUAffinity= in a drop-in (systemctl edit dtmf-gateway), not here.
EOF
        put "" -m 0644 "$tmp" "$ROOT$DEFAULTS"
        rm -f "$tmp"
    fi

    if [ ! -e "$ROOT$TMPFILES" ]; then
        put "" -d -m 0755 "$ROOT$(dirname "$TMPFILES")"
        local tmp
        tmp=$(mktemp "$ROOT$(dirname "$TMPFILES")/.$NAME.XXXXXX")
        # A minute of 8 kHz audio is about 1 MB: unattended, recordings would
        # fill the SD card. systemd-tmpfiles-clean.timer applies this daily.
        cat >"$tmp" <<EOF
# Recordings whose last write is older than the age below are deleted (daily,
# by systemd-tmpfiles-clean.timer). Change the age, or put - to keep them all.
# deploy/install.sh does not overwrite this file.
e $STATE/recordings - - - mM:30d
EOF
        put "" -m 0644 "$tmp" "$ROOT$TMPFILES"
        rm -f "$tmp"
    fi

    put "$SERVICE_USER:$SERVICE_USER" -d -m 0750 "$ROOT$STATE" "$ROOT$STATE/recordings"
    if [ "$STAGING" = 0 ] && [ -e "$STATE/users.toml" ]; then
        # `dtmf-gateway passwd` run as root leaves a file the service cannot read.
        chown "$SERVICE_USER:$SERVICE_USER" "$STATE/users.toml"
    fi
    put "" -d -m 0755 "$ROOT$(dirname "$UNIT")" "$ROOT$(dirname "$LINK")"
    put "" -m 0644 "$SRC/systemd/$NAME.service" "$ROOT$UNIT"
    ln -sfn "$OPT/bin/$NAME" "$ROOT$LINK"
}

service_on() {
    if [ "$STAGING" = 0 ]; then
        # Never restart into a configuration that does not load.
        if ! runuser -u "$SERVICE_USER" -- "$OPT/bin/python" -c \
            'import sys; from gateway.config import load; load(sys.argv[1])' "$ETC/gateway.toml"; then
            echo "install.sh: $ETC/gateway.toml does not load; fix it, then:" \
                "systemctl restart $NAME" >&2
            exit 1
        fi
    fi
    run systemctl daemon-reload
    run systemctl enable "$NAME.service"
    run systemctl restart "$NAME.service"
}

install_all() {
    check_system
    apt_packages
    system_user
    files
    python_env
    service_on
    cat <<EOF

dtmf-gateway is installed${ROOT:+ in $ROOT}.
  Add an API user:   sudo -u $SERVICE_USER $NAME passwd HTTP_User_1 --config $ETC/gateway.toml
  Configure lines:   sudoedit $ETC/gateway.toml  (then: sudo systemctl restart $NAME)
  Follow the log:    journalctl -u $NAME -f
  Check it:          curl http://127.0.0.1:9509/healthz
EOF
}

uninstall_all() {
    check_system
    if [ "$STAGING" = 1 ] || [ -e "$UNIT" ]; then
        run systemctl disable --now "$NAME.service"
    fi
    rm -f "$ROOT$UNIT"
    run systemctl daemon-reload
    if [ -L "$ROOT$LINK" ] && [ "$(readlink "$ROOT$LINK")" = "$OPT/bin/$NAME" ]; then
        rm -f "$ROOT$LINK"
    fi
    rm -rf "$ROOT$OPT"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ROOT$ETC" "$ROOT$STATE" "$ROOT$DEFAULTS" "$ROOT$TMPFILES"
        if has_user "$SERVICE_USER" || [ "$STAGING" = 1 ]; then
            run userdel "$SERVICE_USER"
        fi
        say "removed dtmf-gateway, its configuration, users, recordings and user"
    else
        say "removed dtmf-gateway; kept $ETC, $DEFAULTS, $TMPFILES and $STATE" \
            "(--purge removes them)"
    fi
}

case "$ACTION" in
    install) install_all ;;
    uninstall) uninstall_all ;;
esac
