#!/usr/bin/env bash
# Install what the tests need (Debian peer packages when root, the venv with test extras)
# and run the whole suite in parallel workers. Extra arguments go to pytest (e.g. scripts/test.sh -k ping,
# scripts/test.sh tests/test_config.py -q -x).
# Under CI=true a skipped test fails the run, and so does a run that executes no test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

PEER_PACKAGES=(
    iproute2 iputils-ping fping nftables procps psmisc netcat-openbsd curl
    nginx-light vsftpd dovecot-pop3d dovecot-imapd openssh-server openssh-client
    prometheus systemd python3-venv
    openipmi ipmitool snmpd snmp postgresql mariadb-server monitoring-plugins-basic
    restic chromium fonts-vlgothic prometheus-alertmanager
    libvirt-daemon libvirt-clients libvirt-dev pkg-config gcc python3-dev
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for pkg in "${PEER_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing peer packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    echo "not root: peer packages are not installed; integration tests that need them will skip" >&2
fi

ensure_venv test
# The whole suite (or a -m/-k selection of it) runs in parallel workers, more than the cores,
# since the tests mostly wait for peers, daemons and ladders (pytest-xdist; tests/conftest.py
# keeps the tests that share a module-scoped fixture in one worker). Named test files run in
# one process, which starts faster, unless -n N is given; TEST_WORKERS=N sets the default N.
parallel=true
for arg in "$@"; do
    case $arg in
        -n* | --numprocesses* | *no:xdist | tests* | *.py | *::*) parallel=false ;;
    esac
done
if $parallel; then
    set -- -n "${TEST_WORKERS:-4}" --dist load "$@"
fi
exec .venv/bin/python -m pytest "$@"
