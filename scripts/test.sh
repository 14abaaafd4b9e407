#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run all of it: unit tests,
# real vLLM (CPU build) engine tests, and the rest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's packages and the Python packages install side by side (each mostly waits on downloads).
bash scripts/system-packages.sh &
system_packages=$!
bash scripts/setup.sh --dev
wait "$system_packages"
exec .venv/bin/python -m pytest "$@"
