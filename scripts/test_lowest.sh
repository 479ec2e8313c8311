#!/usr/bin/env bash
# The lowest supported versions (constraints-lowest.txt) score exactly: creates .venv-lowest with
# them and runs tests/test_compat.py there (the main suite runs on the newest, in .venv).
# Idempotent: the environment is rebuilt only when this script, pyproject.toml or
# constraints-lowest.txt changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=.venv-lowest
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
stamp=$venv/.rerankd-installed
want=$(cat "$0" pyproject.toml constraints-lowest.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  # torch first, pinned: a looser requirement would pull a multi-GB CUDA build.
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" -r constraints-lowest.txt
  "${pip[@]}" --no-deps -e .
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -c 'import transformers, tokenizers, torch; print(f"lowest versions: transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, torch {torch.__version__}")'
HF_HUB_OFFLINE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_compat.py
