"""The one check every text goes through before a tokenizer (or a JSON encoder) sees it.

JSON lets a client send ``"\\ud800"``: a lone UTF-16 surrogate, which Python decodes into a ``str``
that is not valid Unicode. Tokenizers refuse such strings with a type error and UTF-8 encoders with
an encode error, so without this check the request would fail deep inside the engine as a server
error. NUL characters (U+0000) are valid Unicode and every tokenizer takes them: they are accepted.

Example:
    >>> check_text("Paris", "query")
    'Paris'
    >>> check_text("caf\\udce9", "document 3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rerankd.errors.InputError: document 3 is not valid Unicode: it holds a lone surrogate U+DCE9 at character 3 ...
"""

from __future__ import annotations

import math
from typing import Any

from rerankd.errors import InputError


def check_text(value: str, where: str, error: type[InputError] = InputError) -> str:
    """Return ``value`` when it is valid Unicode, else raise ``error`` naming ``where`` and the position.

    Args:
        value: the text as the client sent it.
        where: how the client names it: ``"query"``, ``"document 3"``, ``"texts[3]"``, ``"instruction"``.
        error: the :class:`~rerankd.errors.InputError` subclass to raise (e.g. ``InvalidDocumentError``).
    """
    if value.isascii():  # the common case, checked in C without copying
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        raise error(
            f"{where} is not valid Unicode: it holds a lone surrogate U+{ord(char):04X} at character {exc.start} "
            "(a JSON \\uD800-\\uDFFF escape must be one half of a high-low pair); send the text as valid UTF-8"
        ) from None
    return value


def check_returnable(value: Any, where: str, error: type[InputError] = InputError) -> Any:
    """Return a JSON value the server will echo back once it can be written as standard JSON.

    Refuses lone surrogates (in strings and object keys) and NaN or infinite numbers anywhere in it,
    naming the path (``document 2 field "meta"[0]``). Walks iteratively: nesting depth is bounded only
    by what the JSON parser accepted.
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            check_text(item, path, error)
        elif isinstance(item, float) and not math.isfinite(item):
            raise error(f"{path} is {item}, which standard JSON cannot hold; send a finite number or a string")
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(str(key), f"a field name in {path}", error)
                stack.append((child, f"{path} field {key!r}"))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return value
