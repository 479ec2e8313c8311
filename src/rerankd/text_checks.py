"""The one check every text passes before it reaches a tokenizer.

JSON may carry lone UTF-16 surrogates (``"\\ud800"`` is valid JSON but not valid Unicode text);
Python keeps them in ``str``, and the Rust tokenizers then fail deep inside with an encoding error.
Checking here turns that into a 4xx that names the field.
"""

from __future__ import annotations

from typing import Any

from rerankd.errors import InvalidDocumentError


def check_text(value: Any, where: str) -> str:
    """Return ``value`` if it is a string the tokenizer can take; else raise naming ``where``.

    NUL and other control characters are kept: the tokenizers accept them, and so do the models'
    reference implementations.

    Example:
        >>> check_text("fine", "query")
        'fine'
    """
    if not isinstance(value, str):
        raise InvalidDocumentError(f"{where} is a {type(value).__name__}, not text; send a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidDocumentError(
            f"{where} is not valid Unicode text: it holds a lone surrogate (\\u{ord(value[exc.start]):04x}) at "
            f"character {exc.start}; send UTF-8 text"
        ) from None
    return value
