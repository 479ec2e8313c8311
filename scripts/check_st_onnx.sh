#!/usr/bin/env bash
# Issue 18's check: `pip install rerankd 'sentence-transformers[onnx]'` in a fresh virtualenv (the onnx
# extra pulls transformers<4.58 through optimum), then a score: no crash, and the same scores as the
# newest transformers in .venv (NEWEST_VENV to use another) within 1e-5. The fresh virtualenv lives in
# a temporary folder, removed afterwards; pip's cache makes a second run quicker. Not part of
# `make test` (it installs the onnx stack from scratch); run it when transformers compatibility changes.
set -euo pipefail
cd "$(dirname "$0")/.."
newest=${NEWEST_VENV:-.venv}
[ -n "${NEWEST_VENV:-}" ] || ./scripts/setup.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check)
# torch first, pinned (constraints.txt): a looser requirement would pull a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c constraints.txt . 'sentence-transformers[onnx]'
cat > "$work/score.py" <<'PY'
"""Build (once) a tiny BERT cross-encoder, score four documents with rerankd's defaults, write the scores."""
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, sys.argv[1])  # tests/, for tiny_models
import tiny_models  # noqa: E402
from rerankd import Reranker  # noqa: E402

model, out = Path(sys.argv[2]), Path(sys.argv[3])
if not (model / "config.json").exists():
    tiny_models.bert_cross_encoder(model)
docs = ["Paris is the capital and largest city of France.", "Bananas are a yellow fruit rich in potassium.",
        "The Eiffel Tower was completed in 1889.", "France borders Belgium, Germany and Spain."]
reranker = Reranker.from_pretrained(str(model))
scores = reranker.score("Which city is the capital of France?", docs)
out.write_text(json.dumps(scores))


def installed(name: str) -> str:
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return f"no {name}"


names = ("transformers", "sentence-transformers", "optimum", "optimum-onnx", "torch")
print(", ".join(map(installed, names)), f"| packed={reranker.describe()['packed']} scores={[round(s, 6) for s in scores]}")
PY
# The fresh venv imports the rerankd it installed (the script's folder, not ./src, is on its path).
HF_HUB_OFFLINE=1 "$work/venv/bin/python" "$work/score.py" "$PWD/tests" "$work/bert" "$work/fresh.json"
HF_HUB_OFFLINE=1 PYTHONPATH=src "$newest/bin/python" "$work/score.py" "$PWD/tests" "$work/bert" "$work/newest.json"
python3 - "$work/fresh.json" "$work/newest.json" <<'PY'
import json, sys
fresh, newest = (json.load(open(p)) for p in sys.argv[1:])
worst = max(abs(a - b) for a, b in zip(fresh, newest))
print(f"max |score difference| fresh venv vs newest = {worst:.2e} (bound 1e-5)")
sys.exit(0 if worst <= 1e-5 else 1)
PY
