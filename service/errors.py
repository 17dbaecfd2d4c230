"""Every error leaves as JSON `{"error": {"code", "message"}}`; no stack trace ever reaches a client."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fnac.media import MediaError, MediaTooLarge
from service.batcher import Overloaded
from service.decoding import PoolBusy

log = logging.getLogger("fnac.errors")


class ApiError(Exception):
    """An error with its HTTP status, stable code and actionable message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class UploadTooLarge(ApiError):
    def __init__(self, limit_bytes: int):
        super().__init__(
            413, "upload_too_large", f"the request body exceeds the limit of {limit_bytes / 2**20:g} MB"
        )


class UploadStalled(ApiError):
    def __init__(self, message: str):
        super().__init__(408, "upload_timeout", message)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "upload_too_large",
    415: "unsupported_media_type",
}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(MediaError)
    async def media_error(_: Request, exc: MediaError):
        return error_response(413 if isinstance(exc, MediaTooLarge) else 422, exc.code, exc.message)

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded):
        return error_response(429, "overloaded", exc.message, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(PoolBusy)
    async def pool_busy(_: Request, exc: PoolBusy):
        return error_response(
            429, "overloaded", "too many uploads are being decoded, retry shortly", {"Retry-After": "1"}
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('body', 'query'))}: {e.get('msg')}"
            for e in exc.errors()
        )
        return error_response(422, "invalid_parameter", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error; see the server log for details")
