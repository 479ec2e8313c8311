"""The one table from error kinds to HTTP statuses, and the two error body shapes.

Every error the server answers goes through :func:`error_status` and :func:`error_body`: routes and
middleware raise, never build error responses themselves. A user's mistake is a 4xx whose message
says what to fix; anything else is a 5xx whose message never carries internal exception text (the
server log has it, under the request id).
"""

from __future__ import annotations

from typing import Any

from rerankd.errors import (
    EmptyDocumentsError,
    EmptyQueryError,
    InferenceError,
    InputError,
    InputTooLargeError,
    MediaError,
    MediaFetchError,
    MediaRefusedError,
    MediaTimeoutError,
    MediaTooLargeError,
    ModelError,
    ModelNotFoundError,
    OverloadedError,
    RerankdError,
    TooManyDocumentsError,
)


class UnauthorizedError(RerankdError):
    """The request has no ``Authorization: Bearer`` key, or not the server's."""

    kind = "unauthorized"


class MalformedBodyError(InputError):
    """The body is not JSON at all."""

    kind = "invalid_json"


class UnsupportedMediaTypeError(InputError):
    """The body was sent with a Content-Type other than JSON."""

    kind = "unsupported_media_type"


class RequestValidationFailed(InputError):
    """The JSON does not fit the request schema (missing fields, wrong types, out-of-range values)."""

    kind = "invalid_request"


class RouteNotFoundError(RerankdError):
    kind = "not_found"


class MethodNotAllowedError(RerankdError):
    kind = "method_not_allowed"


class ClientDisconnected(RerankdError):
    """The client went away before its answer was ready; its queued work was dropped."""

    kind = "client_closed"


#: (error class, HTTP status, TEI error_type). First match wins, so subclasses come before their bases.
STATUS_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnauthorizedError, 401, "unauthorized"),
    (RouteNotFoundError, 404, "validation"),
    (ModelNotFoundError, 404, "validation"),
    (MethodNotAllowedError, 405, "validation"),
    (MalformedBodyError, 400, "validation"),
    (UnsupportedMediaTypeError, 415, "validation"),
    (TooManyDocumentsError, 413, "validation"),
    # Media: a refusal by the policy, a cap, a slow or failing remote host are all the request's
    # problem (never a 5xx); each message names the query or document index and the limit.
    (MediaTooLargeError, 413, "validation"),
    (MediaRefusedError, 422, "validation"),
    (MediaTimeoutError, 422, "validation"),
    (MediaFetchError, 422, "validation"),
    (MediaError, 422, "validation"),
    (InputTooLargeError, 413, "validation"),
    (EmptyQueryError, 422, "empty"),
    (EmptyDocumentsError, 422, "empty"),
    (InputError, 422, "validation"),
    (OverloadedError, 429, "overloaded"),
    (ClientDisconnected, 499, "validation"),
    (InferenceError, 500, "backend"),
    (ModelError, 500, "backend"),
)
_INTERNAL = (500, "internal_error", "backend")


def error_status(exc: BaseException) -> tuple[int, str, str]:
    """(status, kind, TEI error_type) of an exception.

    Example:
        >>> error_status(OverloadedError("busy"))
        (429, 'overloaded', 'overloaded')
    """
    for cls, status, tei_type in STATUS_TABLE:
        if isinstance(exc, cls):
            return status, getattr(exc, "kind", "error"), tei_type
    return _INTERNAL


def public_message(exc: BaseException, status: int, request_id: str) -> str:
    """What the client may read: our own message for its mistakes, a pointer to the log otherwise."""
    if status < 500:
        # A message may quote the client's input; a lone surrogate in it would fail the UTF-8 encoder.
        return str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(exc, InferenceError):
        return f"scoring failed inside the model backend; the server log has the details under request id {request_id}"
    return f"internal server error; the server log has the details under request id {request_id}"


def error_body(kind: str, tei_type: str, message: str, tei: bool) -> dict[str, Any]:
    """``{"error": {"type", "message"}}``, or TEI's ``{"error", "error_type"}`` for TEI-shaped requests."""
    if tei:
        return {"error": message, "error_type": tei_type}
    return {"error": {"type": kind, "message": message}}
