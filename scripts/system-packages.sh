#!/usr/bin/env bash
# Debian packages the tests use, installed only when missing (needs root or sudo):
# PostgreSQL (tests start throwaway servers with initdb/pg_ctl) and Chromium (dashboard tests).
set -euo pipefail
packages=()
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" > /dev/null || packages+=(postgresql)
[ -x /usr/bin/chromium ] || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi
