"""ASGI middleware: request ids + access log + metrics, and the streaming request-body limit."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.errors import UploadStalled, UploadTooLarge, error_response

access_log = logging.getLogger("fnac.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Assigns X-Request-ID (kept from the client when well-formed), logs one JSON line per request and
    counts it in the Prometheus metrics under its route template."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route_name = route_template(scope)
            metrics.REQUESTS.labels(route=route_name, method=scope["method"], status=str(status)).inc()
            metrics.REQUEST_SECONDS.labels(route=route_name).observe(elapsed)
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 2), "route": route_name},
            )
            logs.request_id.reset(token)


def route_template(scope: Scope) -> str:
    """The path template of the route that served the request (`/localize`, `/docs`), or "unmatched".

    FastAPI's own routes record themselves in the scope; plain Starlette routes and mounts (the OpenAPI
    document, the docs' static files) leave only their endpoint there, so they are looked up by it."""
    route = scope.get("route")
    endpoint = scope.get("endpoint")
    if route is None and endpoint is not None:
        routes = getattr(scope.get("router"), "routes", ())
        route = next(
            (r for r in routes if endpoint in (getattr(r, "endpoint", None), getattr(r, "app", None))), None
        )
    return getattr(route, "path", None) or "unmatched"


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes`: at once from Content-Length, otherwise while streaming, so an
    oversized upload is never buffered in full. A body that stops arriving (no new bytes for `idle_timeout_s`)
    or takes longer than `total_timeout_s` in all is answered 408, so a stalled or trickling client cannot hold
    a connection and its buffered parts forever."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, idle_timeout_s: float = 30.0, total_timeout_s: float = 300.0
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self.total_timeout_s = total_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = UploadTooLarge(self.max_bytes)
            await error_response(error.status, error.code, error.message, {"Connection": "close"})(
                scope, receive, send
            )
            return
        seen = 0
        body_done = False
        deadline = time.monotonic() + self.total_timeout_s

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if body_done:  # after the body only a disconnect can come; waiting for it is the app's business
                return await receive()
            wait = min(self.idle_timeout_s, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
            except TimeoutError:
                if wait < self.idle_timeout_s:  # the whole-body deadline was the nearer one
                    raise UploadStalled(
                        f"the request body took longer than {self.total_timeout_s:g} s to arrive"
                    ) from None
                raise UploadStalled(f"no request body data arrived for {self.idle_timeout_s:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise UploadTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)
