#!/usr/bin/env bash
# Install what the quickstart needs, then run a real tuning study on the CPU: the demo model
# is installed from autotune/demo_files on first use (cached, checked by hash), SQLite storage
# (autotune.db), the trials the space asks for (7). benchmarks/newcomer.py times each phase
# from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/autotune study start --space search_spaces/quickstart-cpu.yaml "$@"
.venv/bin/autotune export quickstart-cpu -o quickstart-cpu.vllm.yaml
echo "Start the chosen configuration with:"
echo "  .venv/bin/python -m vllm.entrypoints.openai.api_server --config quickstart-cpu.vllm.yaml"
