#!/bin/sh
# The image's install steps, also run by tests/system/test_deploy.py in a fresh venv so CI exercises them.
# torch first, pinned; TORCH_INDEX_URL selects the CPU wheel index in the image build.
set -eu
python -m pip install --no-cache-dir --upgrade pip
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  python -m pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.13.0
else
  python -m pip install --no-cache-dir torch==2.13.0
fi
python -m pip install --no-cache-dir "${1:-.}"
