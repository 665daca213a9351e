"""Typed domain errors: what a client may see (ServiceError: an HTTP status, a stable type and a message),
what the pipeline falls back from (BackendError), and why the service refuses to start. Plain exceptions;
app.error_handlers maps them to the one JSON error envelope."""

from __future__ import annotations


class ServiceError(Exception):
    """An error a client can see: HTTP status, a stable type string and a message naming the problem."""

    status = 400
    type = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ServiceError):
    status, type = 422, "invalid_request"


class NotFoundError(ServiceError):
    status, type = 404, "not_found"


class UnauthorizedError(ServiceError):
    status, type = 401, "unauthorized"


class UnsupportedMediaTypeError(ServiceError):
    """A body sent without `content-type: application/json` (curl -d sends a form by default)."""

    status, type = 415, "unsupported_media_type"


class StoreUnavailableError(ServiceError):
    """The history store (Redis) cannot be reached: reads and writes of stored histories fail honestly."""

    status, type = 503, "store_unavailable"


class NotReadyError(ServiceError):
    """The service is starting or stopping."""

    status, type = 503, "not_ready"


class BackendError(Exception):
    """The LLM backend failed or timed out; the pipeline falls back to SASRec, clients never see this."""


class LoadShedError(BackendError):
    """The LLM queue is too long to answer within the shedding budget; the caller falls back at once."""


class StartupError(Exception):
    """The service refuses to start (bad bundle, unusable LLM, bad settings); the message says why."""
