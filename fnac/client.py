"""`fnac.Client` and `fnac.AsyncClient`: `POST /localize` of a running FNAC service, on httpx.

    with fnac.Client("http://127.0.0.1:8000", api_key="...") as client:
        result = client.localize(video="clip.mp4", stride=0.5)

The options are those of the HTTP API (and of `fnac.Localizer.localize`); the answer is the same typed result
(`fnac.schemas.LocalizeResponse`, or `SweepResponse` with `stride`); an error answer raises
`fnac.LocalizeError` carrying the API's `code`, `message` and the HTTP `status`.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import numpy as np

from fnac import schemas
from fnac.errors import LocalizeError

DEFAULT_TIMEOUT = 60.0

LocalizeResult = schemas.LocalizeResponse | schemas.SweepResponse


def _file(value, field: str) -> tuple[str, bytes]:
    """One multipart file from a path, bytes, a binary file object, an array or (waveform, rate)."""
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        return path.name, path.read_bytes()
    if isinstance(value, bytes | bytearray):
        return field, bytes(value)
    if hasattr(value, "read"):
        return Path(getattr(value, "name", field)).name, value.read()
    if field == "image" and (isinstance(value, np.ndarray) or hasattr(value, "save")):
        return "image.png", _png(value)
    if field == "audio" and isinstance(value, tuple) and len(value) == 2:
        return "audio.wav", _float_wav(*value)
    raise TypeError(f"{field}: give a path, bytes or a binary file, not {type(value).__name__}")


def _png(image) -> bytes:
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise TypeError(f"image must be a uint8 [H, W, 3] RGB array, not {image.dtype} {image.shape}")
        image = Image.fromarray(image, mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _float_wav(waveform, sample_rate: int) -> bytes:
    """A waveform as a 32-bit float WAV (lossless, unlike 16-bit PCM): mono, or [samples, channels]."""
    samples = np.asarray(waveform, dtype="<f4")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    data = samples.tobytes()
    rate = int(sample_rate)
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * 4 * channels, 4 * channels, 32)  # 3: IEEE float
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _request(video, image, audio, options: dict[str, Any]) -> tuple[dict, dict]:
    if video is not None and (image is not None or audio is not None):
        raise LocalizeError("conflicting_fields", "give either video, or image + audio, not both")
    if video is None and (image is None or audio is None):
        raise LocalizeError("missing_field", "give a video, or an image and its audio")
    files = (
        {"video": _file(video, "video")}
        if video is not None
        else {
            "image": _file(image, "image"),
            "audio": _file(audio, "audio"),
        }
    )
    data = {}
    for key, value in options.items():
        if value is None:
            continue
        data[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return files, data


def _answer(response: httpx.Response) -> LocalizeResult:
    if response.status_code != 200:
        try:
            error = schemas.ErrorBody.model_validate(response.json()).error
            code, message = error.code, error.message
        except ValueError:  # not our JSON error body (a proxy's HTML page, ...)
            code, message = "http_error", f"HTTP {response.status_code}: {response.text[:200]}"
        raise LocalizeError(code, message, status=response.status_code)
    body = response.json()
    if "windows" in body:
        return schemas.SweepResponse.model_validate(body)
    return schemas.LocalizeResponse.model_validate(body)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def _connection_failed(exc: httpx.HTTPError) -> LocalizeError:
    return LocalizeError("connection_failed", f"{type(exc).__name__}: {exc}")


def _model_answer(response: httpx.Response) -> dict:
    if response.status_code != 200:
        _answer(response)
    return response.json()


Result = TypeVar("Result")


class _Service(Generic[Result]):
    """What both clients share: the connection's settings and the requests; a subclass sends them
    (`_post_localize`) on its httpx client (`_http_type`)."""

    _http_type: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ):
        self._http = self._http_type(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def localize(
        self,
        video=None,
        *,
        image=None,
        audio=None,
        t: float | None = None,
        stride: float | None = None,
        boxes: str | None = None,
        box_threshold: float | None = None,
        heatmap_png: bool | None = None,
        ogl: bool | None = None,
    ) -> Result:
        """`POST /localize` with a clip (`video`) or a frame + audio; the options are the API's."""
        options = dict(
            t=t, stride=stride, boxes=boxes, box_threshold=box_threshold, heatmap_png=heatmap_png, ogl=ogl
        )
        return self._post_localize(*_request(video, image, audio, options))

    def _post_localize(self, files: dict, data: dict) -> Result:
        raise NotImplementedError


class Client(_Service[LocalizeResult]):
    """A synchronous client of one FNAC service (`base_url`, e.g. "http://127.0.0.1:8000").

    `api_key` is sent as X-API-Key; `timeout` in seconds covers each request (uploads of long clips need
    more than the default); `transport` is passed to httpx (e.g. an ASGI or mock transport in tests).
    """

    _http_type = httpx.Client
    _http: httpx.Client

    def _post_localize(self, files: dict, data: dict) -> LocalizeResult:
        try:
            response = self._http.post("/localize", files=files, data=data)
        except httpx.HTTPError as exc:
            raise _connection_failed(exc) from None
        return _answer(response)

    def model(self) -> dict:
        """`GET /v1/model`: what the service runs."""
        return _model_answer(self._http.get("/v1/model"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Service[Awaitable[LocalizeResult]]):
    """The asyncio form of `Client`: the same options and results, awaited (`transport`: an async one)."""

    _http_type = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def _post_localize(self, files: dict, data: dict) -> LocalizeResult:
        try:
            response = await self._http.post("/localize", files=files, data=data)
        except httpx.HTTPError as exc:
            raise _connection_failed(exc) from None
        return _answer(response)

    async def model(self) -> dict:
        """`GET /v1/model`: what the service runs."""
        return _model_answer(await self._http.get("/v1/model"))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
