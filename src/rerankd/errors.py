"""The one exception tree of rerankd. No HTTP here: the server maps these kinds to status codes.

::

    RerankdError
    ├── InputError                  the caller's input is wrong; fix the request
    │   ├── EmptyQueryError
    │   ├── EmptyDocumentsError
    │   ├── InvalidDocumentError
    │   ├── TooManyDocumentsError
    │   ├── InputTooLargeError      tokens / bytes over a configured limit
    │   └── MediaError              an image or video cannot be used (rerankd.media)
    │       ├── MediaRefusedError       the media policy forbids it (scheme, domain, address, path)
    │       ├── MediaTooLargeError      bytes, pixels, frames, seconds, images over a limit
    │       ├── MediaTimeoutError       fetching it took longer than allowed
    │       └── MediaFetchError         the remote server did not hand it over
    ├── ModelError                  the model cannot be loaded or used
    │   ├── ModelNotFoundError      no such directory, hub repo or revision
    │   ├── ModelAccessError        the hub refused (gated, bad token) or could not be reached
    │   └── UnsupportedModelError
    ├── MissingDependencyError      an optional extra is not installed; says the pip command
    ├── OverloadedError             queued work is over its limit; retry later
    ├── InferenceError              the backend failed while scoring a batch
    └── QualityBoundError           a quantized model broke the quality bound it was asked to keep
"""

from __future__ import annotations


class RerankdError(Exception):
    """Base of every error rerankd raises on purpose."""

    #: A short, stable name for the kind of error (used in logs, metrics and HTTP error bodies).
    kind: str = "error"


class InputError(RerankdError, ValueError):
    """The input is wrong: the message says what and how to fix it."""

    kind = "invalid_request"


class EmptyQueryError(InputError):
    kind = "empty_query"


class EmptyDocumentsError(InputError):
    kind = "empty_documents"


class InvalidDocumentError(InputError):
    kind = "invalid_document"


class TooManyDocumentsError(InputError):
    kind = "too_many_documents"


class InputTooLargeError(InputError):
    kind = "input_too_large"


class ModelError(RerankdError):
    kind = "model_error"


class ModelNotFoundError(ModelError, FileNotFoundError):
    kind = "model_not_found"


class ModelAccessError(ModelError):
    kind = "model_access"


class UnsupportedModelError(ModelError):
    kind = "unsupported_model"


class MissingDependencyError(RerankdError, ImportError):
    kind = "missing_dependency"


class OverloadedError(RerankdError):
    kind = "overloaded"


class InferenceError(RerankdError):
    kind = "inference_error"


class QualityBoundError(RerankdError):
    kind = "quality_bound"


class MediaError(InvalidDocumentError):
    """An image or video of a query or document cannot be read, decoded or used."""

    kind = "invalid_media"


class MediaRefusedError(MediaError):
    """The media policy forbids this source: its scheme, domain, address or local path."""

    kind = "media_refused"


class MediaTooLargeError(MediaError, InputTooLargeError):
    """Media over a limit: bytes, pixels, frames, video seconds, fps or images per request."""

    kind = "media_too_large"


class MediaTimeoutError(MediaError):
    """Fetching remote media took longer than the policy's timeout."""

    kind = "media_timeout"


class MediaFetchError(MediaError):
    """The remote server did not hand the media over (connection failure, HTTP error status)."""

    kind = "media_fetch_failed"
