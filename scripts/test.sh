#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run all of it: unit tests,
# real vLLM (CPU build) engine tests, and the rest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
bash scripts/system-packages.sh
exec .venv/bin/python -m pytest "$@"
