"""Instruction-aware training: one task instruction per query, drawn from a file, for teacher and student alike.

``--instructions FILE`` holds one instruction per line (blank lines and ``#`` comments skipped). Each
query gets one of them, drawn from a generator seeded by (seed, query id), so the draw does not depend
on which other queries are in the run, a resumed run draws the same, and the teacher's cached score
of a pair was made under the instruction the student sees for it. Families with an instruction slot
(LLM yes/no rerankers) read it in their prompt; a cross-encoder has none and reads the pair as served.

Example:
    >>> draw = InstructionDraw(("Find evidence for the claim", "Retrieve the abstract"), seed=0)
    >>> sorted(draw.per_query(["q1", "q2"]))
    ['q1', 'q2']
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from rerankd.errors import InputError


def read_instructions(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--instructions {p} does not exist")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    if not instructions:
        raise InputError(f"--instructions {p} holds no instruction (one per line)")
    return instructions


@dataclass(frozen=True)
class InstructionDraw:
    """Instructions to draw from, and the seed of the draw."""

    instructions: tuple[str, ...]
    seed: int

    def per_query(self, qids: Iterable[str]) -> dict[str, str]:
        """One instruction per query id, drawn independently of the other ids."""
        n = len(self.instructions)
        return {q: self.instructions[int(np.random.default_rng([self.seed, 2, zlib.crc32(q.encode())]).integers(n))] for q in qids}

    def setting(self) -> str:
        """What the teacher's score cache records as the run's instruction (a rerun with others is refused)."""
        digest = hashlib.sha256("\n".join(self.instructions).encode()).hexdigest()[:16]
        return f"one per query of {len(self.instructions)} (sha256:{digest}, seed {self.seed})"


def load_draw(path: str | Path | None, seed: int) -> InstructionDraw | None:
    return InstructionDraw(tuple(read_instructions(path)), seed) if path else None
