"""Typed dependencies for the routes: the loaded service and the optional API-key check."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from fnac.gpu import Verdict
from fnac.pipeline import InputSpec
from fnac.runtime import ModelRuntime
from service.batcher import MicroBatcher
from service.config import Settings
from service.decoding import DecodePool
from service.errors import ApiError


@dataclass
class ServiceState:
    """Everything the lifespan loaded, shared by all requests."""

    settings: Settings
    runtime: ModelRuntime
    batcher: MicroBatcher
    decode_pool: DecodePool
    spec: InputSpec
    sounding_threshold: float
    sounding_threshold_source: str  # "metadata" | "settings" | "fallback"
    verdict: Verdict | None = None  # GPU or not, and why (the line `fnac doctor` prints)
    render_pool: DecodePool | None = None  # started by the first overlay video (`renderer`)
    _render_start: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def renderer(self) -> DecodePool:
        """The overlay-video workers, started on first use: most deployments never render, and a worker process
        costs memory and start-up time."""
        async with self._render_start:
            if self.render_pool is None:
                settings = self.settings
                pool = DecodePool(
                    settings.render_workers,
                    settings.render_timeout_s,
                    backlog=settings.queue_size,
                    shared_bytes=round(settings.decode_shared_mb * 2**20),
                    task="rendering the overlay video",
                    timeout_code="render_timeout",
                )
                await pool.start()
                self.render_pool = pool
            return self.render_pool

    def close_pools(self) -> None:
        self.decode_pool.close()
        if self.render_pool is not None:
            self.render_pool.close()


# The dependencies are coroutines although they never wait: FastAPI runs a plain function dependency in its
# thread pool, and a thread hop per dependency costs more CPU than what these functions do.


async def get_service(request: Request) -> ServiceState:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(503, "not_ready", "the model is still loading, retry shortly", {"Retry-After": "1"})
    return service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def require_api_key(request: Request) -> None:
    """401 unless the request carries one of FNAC_API_KEYS (X-API-Key or Authorization: Bearer)."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    presented = request.headers.get("x-api-key", "")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not presented and scheme.lower() == "bearer":
        presented = token.strip()
    matched = False
    for key in keys:  # compare against every key, in constant time each
        matched |= hmac.compare_digest(presented.encode(), key.get_secret_value().encode())
    if not matched:
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )


ServiceDep = Annotated[ServiceState, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ApiKey = Depends(require_api_key)
