#!/usr/bin/env bash
# Install what the quickstart needs, then run a real tuning study on the CPU: the demo model
# is built offline on first use, SQLite storage (autotune.db), about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/autotune study start --space search_spaces/quickstart-cpu.yaml "$@"
.venv/bin/autotune export quickstart-cpu -o quickstart-cpu.vllm.yaml
echo "Start the chosen configuration with:"
echo "  .venv/bin/python -m vllm.entrypoints.openai.api_server --config quickstart-cpu.vllm.yaml"
