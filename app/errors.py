"""One error shape for every failure: ``{"error": {"message", "type", "param", "code"}}``.

Code raises a typed :class:`APIError` (an ``HTTPException``, so FastAPI's own body parsing
lets it through untouched); :func:`install_error_handlers` turns it, FastAPI's validation
errors, Starlette's HTTP errors (404, 405) and anything unexpected into
that shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    504: "timeout_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable",
}


ERROR_DESCRIPTIONS = {
    400: "Invalid request: a bad field value, empty audio, no audio stream, or samples that are "
         "not finite numbers",
    401: "Missing or wrong API key (only when AMANUENSIS_API_KEY is set)",
    404: "The model named in the request is not the one this service serves (model_not_found), "
         "or no such job (never submitted, deleted, or past its retention time)",
    409: "The job has not succeeded (yet): queued, running, failed or cancelled",
    413: "Upload larger than AMANUENSIS_MAX_UPLOAD_BYTES (refused before it is read), or audio "
         "longer than AMANUENSIS_MAX_AUDIO_SECONDS (AMANUENSIS_JOB_MAX_AUDIO_SECONDS for jobs)",
    415: "The upload is not audio that can be decoded",
    422: "Word timestamps asked for but the alignment model cannot be loaded",
    429: "Every transcription slot is busy and the queue is full; see Retry-After",
    500: "Unexpected error inside the service",
    503: "The model is not loaded (yet, or it failed to load: the message says why), or the "
         "job store, records or broker are unavailable",
    504: "The request's deadline passed before its transcription finished",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def documented_errors(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for ``statuses``, all with the error shape."""
    responses: dict[int | str, dict] = {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses}
    if 429 in responses:
        responses[429]["headers"] = {"Retry-After": {
            "description": "Seconds after which a place is likely free",
            "schema": {"type": "integer", "minimum": 1}}}
    return responses


class APIError(HTTPException):
    """An error a client sees; ``status_code`` and ``code`` say which."""

    status_code = 500
    code = "internal_error"
    error_type: str | None = None
    """The body's ``type`` when it is not the status's usual one."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status_code=self.status_code, detail=message, headers=headers)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(APIError):
    status_code = 400
    code = "invalid_request"


class EmptyAudio(APIError):
    status_code = 400
    code = "empty_audio"


class UploadTooLarge(APIError):
    status_code = 413
    code = "upload_too_large"


class InvalidAudio(APIError):
    """The upload decodes, but to samples that are not audio (NaN or infinity)."""

    status_code = 400
    code = "invalid_audio"


class AudioTooLong(APIError):
    status_code = 413
    code = "audio_too_long"


class UnsupportedMedia(APIError):
    status_code = 415
    code = "unsupported_media"


class AlignmentUnavailable(APIError):
    """Word timestamps were asked for but the alignment model for the language cannot load."""

    status_code = 422
    code = "alignment_model_unavailable"


class ModelNotFound(APIError):
    """A request named a model this service does not serve (OpenAI's answer for that)."""

    status_code = 404
    code = "model_not_found"
    error_type = "invalid_request_error"


class NotReady(APIError):
    status_code = 503
    code = "model_not_ready"


class WorkStopped(Exception):
    """Raised inside work whose request stopped waiting for it (deadline passed, client gone),
    so its thread ends and gives its slot back. No client sees it: the request has already
    been answered."""


def error_body(status: int, message: str, param: str | None, code: str | None,
               error_type: str | None = None) -> dict:
    return {
        "error": {
            "message": message,
            "type": error_type or ERROR_TYPES.get(
                status, "invalid_request_error" if status < 500 else "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None,
                   error_type: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code, error_type), status_code=status,
                        headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(_: Request, error: APIError) -> JSONResponse:
    return error_response(error.status_code, error.message, error.param, error.code,
                          headers=error.headers, error_type=error.error_type)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    return error_response(
        error.status_code, str(error.detail), None,
        _HTTP_CODES.get(error.status_code, f"http_{error.status_code}"),
        headers=getattr(error, "headers", None),
    )


async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    param = ".".join(location) or None
    return error_response(400, f"{param or 'request'}: {first.get('msg', 'invalid value')}",
                          param, "invalid_request")


async def _unexpected_error(_: Request, error: Exception) -> JSONResponse:
    logger.exception("unexpected error while handling a request")
    return error_response(500, f"internal error: {type(error).__name__}", None, "internal_error")
