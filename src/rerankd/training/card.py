"""The model card (README.md) of a trained or distilled reranker: data, settings, metrics, usage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


@dataclass
class ModelCard:
    """What a reader needs to trust and reuse a model: where it came from and how well it ranks."""

    title: str
    base_model: str
    how: str
    data: Mapping[str, Any]
    settings: Mapping[str, Any]
    best: Mapping[str, Any] | None = None
    evals: Sequence[Mapping[str, Any]] = field(default_factory=list)
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The family of the saved model (decides the tags and the usage example).
    family: str = "cross-encoder"
    #: The base an adapter folder is loaded with (a LoRA adapter was saved instead of a model).
    adapter_base: str | None = None

    def render(self) -> str:
        lines = [
            "---",
            f"library_name: {'transformers' if self.family == 'llm-yes-no' or self.adapter_base else 'sentence-transformers'}",
            "pipeline_tag: text-ranking",
            f"tags: [{self.family}, reranker, rerankd{', lora' if self.adapter_base else ''}]",
            f"base_model: {self.base_model}",
            "---",
            "",
            f"# {self.title}",
            "",
            self.how,
            "",
            "## Data",
            "",
            *[f"- **{k}**: {v}" for k, v in self.data.items()],
            "",
            "## Dev metrics",
            "",
        ]
        if self.evals:
            metrics = [k for k in self.evals[0] if k not in {"epoch", "step"}]
            lines += ["| epoch | step | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
            for row in self.evals:
                lines.append(f"| {row['epoch']} | {row['step']} | " + " | ".join(f"{row[m]:.4f}" for m in metrics) + " |")
            if self.best:
                lines += ["", f"Kept: epoch {self.best['epoch']} (best NDCG@10 on the dev split, {self.best['ndcg@10']:.4f})."]
        else:
            lines.append("No dev evaluation was run; the last model was kept.")
        for key, value in self.extra.items():
            lines += ["", f"## {key}", "", str(value)]
        lines += [
            "",
            "## Settings",
            "",
            "```json",
            json.dumps(dict(self.settings), indent=2, default=str),
            "```",
            "",
            "Loss and metric curves: `steps.csv`, `evals.csv`, `curves.png` beside this file.",
            "",
            "## Usage",
            "",
            *self._usage(),
        ]
        return "\n".join(lines)

    def _usage(self) -> list[str]:
        if self.adapter_base:
            load = f"reranker = Reranker.from_pretrained({self.adapter_base!r}, adapter=\"path/to/this/folder\")"
        else:
            load = "reranker = Reranker.from_pretrained(\"path/to/this/folder\")"
        lines = ["```python", "from rerankd import Reranker", load, "reranker.rank(\"query\", [\"doc one\", \"doc two\"])"]
        if self.family == "cross-encoder" and not self.adapter_base:
            lines += ["", "from sentence_transformers import CrossEncoder   # the same weights, sigmoid on the logit",
                      "CrossEncoder(\"path/to/this/folder\").predict([(\"query\", \"doc one\")])"]
        return [*lines, "```", ""]

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / "README.md"
        path.write_text(self.render(), encoding="utf-8")
        return path
