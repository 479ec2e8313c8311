"""What the server echoes back (``return_documents`` objects) must be writable as standard JSON.

A client may send an object document holding NaN, Infinity or a lone surrogate in a field that is
never ranked; echoing it back would fail the response encoder after the work was done. Checked
before the work instead, as the client's mistake.
"""

from __future__ import annotations

import math
from typing import Any

from rerankd.errors import InvalidDocumentError
from rerankd.text_checks import check_text


def check_echoable(value: Any, where: str) -> Any:
    """Return ``value`` when standard JSON can hold it; else raise naming the path inside it.

    Walks iteratively, so nesting depth is bounded only by what the JSON parser accepted.

    Example:
        >>> check_echoable({"text": "a", "tags": ["x", 1.5]}, "document 0")
        {'text': 'a', 'tags': ['x', 1.5]}
        >>> check_echoable({"text": "a", "score": float("nan")}, "document 2")
        Traceback (most recent call last):
        ...
        rerankd.errors.InvalidDocumentError: document 2 field 'score' is nan, which standard JSON cannot hold; send a finite number or a string
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidDocumentError(f"{path} is {item}, which standard JSON cannot hold; send a finite number or a string")
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(str(key), f"a field name in {path}")
                stack.append((child, f"{path} field {key!r}"))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return value
