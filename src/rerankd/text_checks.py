"""The one check every text passes before it reaches a tokenizer.

JSON may carry lone UTF-16 surrogates (``"\\ud800"`` is valid JSON but not valid Unicode text);
Python keeps them in ``str``, and the Rust tokenizers then fail deep inside with a type error (a
server error, before this check). NUL (U+0000) and other control characters are valid Unicode: the
tokenizers take them and so do the models' reference implementations, so they are kept.
"""

from __future__ import annotations

from typing import Any

from rerankd.errors import InvalidDocumentError


def check_text(value: Any, where: str) -> str:
    """Return ``value`` if it is a string the tokenizer can take; else raise naming ``where``.

    Args:
        value: the text as the caller sent it.
        where: how the caller names it: ``"query"``, ``"document 3"``, ``"texts[3]"``, ``"instruction"``.

    Raises:
        InvalidDocumentError: ``value`` is not a ``str``, or holds a lone surrogate (the message gives
            its code point and position).

    Example:
        >>> check_text("fine", "query")
        'fine'
        >>> check_text("caf\\udce9", "document 3")
        Traceback (most recent call last):
        ...
        rerankd.errors.InvalidDocumentError: document 3 is not valid Unicode text: it holds a lone surrogate (\\udce9) at character 3; send UTF-8 text
    """
    if not isinstance(value, str):
        raise InvalidDocumentError(f"{where} is a {type(value).__name__}, not text; send a string")
    if value.isascii():  # the common case, answered in C without encoding
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidDocumentError(
            f"{where} is not valid Unicode text: it holds a lone surrogate (\\u{ord(value[exc.start]):04x}) at "
            f"character {exc.start}; send UTF-8 text"
        ) from None
    return value
