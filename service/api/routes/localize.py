"""POST /localize: where in the frame does the sound come from?"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fnac import media, pipeline, postprocess, render, schemas
from fnac.pipeline import DecodedInput, PostOptions, WindowResult
from fnac.schemas import ErrorBody, Localization, LocalizeResponse, SweepResponse, Timings
from service import metrics
from service.api.deps import ApiKey, ServiceDep, ServiceState
from service.batcher import Prediction
from service.errors import ApiError

router = APIRouter(tags=["localize"], dependencies=[ApiKey])

FILE_FIELDS = ("video", "image", "audio")


class LocalizeOptions(BaseModel):
    """Options, as query parameters or multipart form fields (a form field wins)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "png", "mp4"] | None = Field(
        None,
        description="default json; Accept: image/png selects png, Accept: video/mp4 mp4 (the overlay video of "
        "a clip: one window every stride s, default 0.5)",
    )
    png: Literal["overlay", "heatmap"] = Field(
        "overlay", description="which PNG: overlay on the frame or bare map"
    )
    t: float | None = Field(None, ge=0, description="window centre in seconds; default the middle")
    stride: float | None = Field(None, gt=0, description="sweep the whole clip, one window every stride s")
    start: float | None = Field(
        None, ge=0, description="mp4: the overlay video from here (seconds; default 0)"
    )
    end: float | None = Field(None, gt=0, description="mp4: the overlay video up to here (default: the end)")
    heatmap_png: bool = Field(False, description="JSON: include the upsampled heatmap as base64 PNG")
    box_threshold: float | None = Field(None, ge=0, le=1, description="override FNAC_BOX_THRESHOLD")
    boxes: Literal["sounding", "always"] = Field(
        "sounding",
        description="sounding: boxes only for a sounding window ([] otherwise); always: boxes anyway",
    )
    ogl: bool | None = Field(
        None,
        description="object-guided localization, on a model exported with it: boxes and images from the "
        "fused map (default); false serves the audio-visual map alone",
    )


OPTION_FIELDS = set(LocalizeOptions.model_fields)


def _form_field_schema(prop: dict) -> dict:
    """One option's schema as a form field: its type, enum and bounds from the model (the non-null branch of an
    optional field: a form field is left out, never null), with its description and any default."""
    branches = [branch for branch in prop.get("anyOf", [prop]) if branch.get("type") != "null"]
    schema = dict(branches[0]) if len(branches) == 1 else {"anyOf": branches}
    schema.pop("title", None)
    schema["description"] = prop.get("description", "")
    if prop.get("default") is not None:
        schema["default"] = prop["default"]
    return schema


_option_properties = {
    name: _form_field_schema(prop) for name, prop in LocalizeOptions.model_json_schema()["properties"].items()
}
_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "either `video`, or `image` + `audio`; options may also be query parameters",
                    "properties": {
                        "video": {
                            "type": "string",
                            "format": "binary",
                            "description": "a clip (mp4, webm, mov, ...)",
                        },
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "a frame (jpeg, png, webp, ...)",
                        },
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": "audio (wav, mp3, flac, ...)",
                        },
                        **_option_properties,
                    },
                }
            }
        },
    }
}


@router.post(
    "/localize",
    response_model=LocalizeResponse | SweepResponse,
    responses={
        200: {
            "content": {"image/png": {}, "video/mp4": {}},
            "description": "JSON result, a PNG with format=png, or the overlay video with format=mp4",
        },
        400: {
            "model": ErrorBody,
            "description": "malformed multipart body, or more parts than FNAC_MAX_PARTS",
        },
        401: {"model": ErrorBody},
        408: {"model": ErrorBody, "description": "the upload stalled or took too long to arrive"},
        413: {
            "model": ErrorBody,
            "description": "upload, clip or frame beyond the limits; an overlay video beyond "
            "FNAC_RENDER_MAX_SECONDS / FNAC_RENDER_MAX_FRAMES",
        },
        415: {"model": ErrorBody},
        422: {"model": ErrorBody},
        429: {"model": ErrorBody},
    },
    openapi_extra=_OPENAPI,
)
async def localize(request: Request, service: ServiceDep):
    """Localize the sound source in a clip (`video`) or in a still frame + audio (`image` + `audio`)."""
    started = time.perf_counter()
    settings = service.settings
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with a 'video' file, or 'image' and 'audio' files",
        )
    # From upload to queue this request is "on its way": the batcher waits for it instead of running a lone
    # input of another request at once (see service/batcher.py).
    with service.batcher.expecting():
        form = await request.form(max_files=settings.max_parts, max_fields=settings.max_parts)
        uploads, option_fields = _split_form(form)
        options = _parse_options(request, option_fields)
        post = _post_options(service, options)  # before decoding: a bad option costs no work
        fmt = options.format or _format_from_accept(request.headers.get("accept", ""))
        if fmt == "png" and options.stride is not None:
            raise ApiError(
                422, "invalid_parameter", "format=png gives one image; a sweep (stride) answers in JSON"
            )
        if fmt == "mp4":
            options = _video_options(service, uploads, options)
        elif options.start is not None or options.end is not None:
            raise ApiError(
                422, "invalid_parameter", "start and end pick the stretch of an overlay video (format=mp4)"
            )
        decode_started = time.perf_counter()
        decoded = await _decode(service, uploads, options, keep_frame=fmt == "png")
        decode_done = time.perf_counter()
    metrics.DECODE_SECONDS.observe(decode_done - decode_started)
    if fmt == "mp4":  # the clip's length is known now: check the render limit before running the model
        name = uploads["video"].filename or "video"
        begin, finish = media.check_range(options.start, options.end, decoded.duration, name)
        render.check_length(finish - begin, _render_limits(service), name)

    predictions = await service.batcher.predict_many(decoded.images, decoded.audio)
    inferred = time.perf_counter()

    if fmt == "mp4":
        return await _overlay_video(service, uploads["video"], decoded, predictions, post, options)
    if fmt == "png":
        png, window = await run_in_threadpool(_render_png, decoded, predictions[0], post, options.png)
        return Response(
            png,
            media_type="image/png",
            headers={
                "X-FNAC-Score": f"{window.score:.6f}",
                "X-FNAC-Sounding": str(window.sounding).lower(),
                "X-FNAC-Model": service.runtime.model_id,
                "X-FNAC-Map": window.served_map,
            },
        )

    windows = await run_in_threadpool(_localizations, decoded, predictions, post, options.heatmap_png)
    finished = time.perf_counter()
    timings = Timings(
        decode_ms=(decode_done - decode_started) * 1000,
        queue_ms=max(p.queue_ms for p in predictions),
        inference_ms=_inference_ms(predictions),
        postprocess_ms=(finished - inferred) * 1000,
        total_ms=(finished - started) * 1000,
    )
    height, width = decoded.frame_size
    return schemas.response(
        windows,
        model=service.runtime.model_id,
        width=width,
        height=height,
        timings=timings,
        sounding_threshold=service.sounding_threshold,
        stride=options.stride,
        duration=decoded.duration,
    )


def _format_from_accept(accept: str) -> str:
    if "video/mp4" in accept:
        return "mp4"
    return "png" if "image/png" in accept else "json"


def _video_options(service: ServiceState, uploads, options: LocalizeOptions) -> LocalizeOptions:
    """The options of an overlay video, checked: a clip, a sweep (stride 0.5 s unless given), no `t`, and a
    start..end stretch within the render limit."""
    if "video" not in uploads:
        raise ApiError(422, "invalid_parameter", "format=mp4 draws the overlay on a clip: send it as 'video'")
    if options.t is not None:
        raise ApiError(
            422, "invalid_parameter", "t picks one window; an overlay video covers start..end (format=mp4)"
        )
    if options.start is not None and options.end is not None:
        if options.end <= options.start:
            raise ApiError(
                422, "invalid_range", f"end={options.end:g} s is not after start={options.start:g} s"
            )
        render.check_length(
            options.end - options.start, _render_limits(service), uploads["video"].filename or "video"
        )
    return options.model_copy(update={"stride": options.stride or render.DEFAULT_STRIDE})


def _render_limits(service: ServiceState) -> render.RenderLimits:
    settings = service.settings
    return render.RenderLimits(
        max_seconds=settings.render_max_seconds,
        max_frames=settings.render_max_frames,
        max_pixels=settings.max_image_pixels,
    )


async def _overlay_video(
    service: ServiceState,
    upload: UploadFile,
    decoded: DecodedInput,
    predictions: list[Prediction],
    post: PostOptions,
    options: LocalizeOptions,
) -> Response:
    """Render the overlay MP4 in a render worker (it decodes and encodes the whole stretch: bounded work off
    the event loop, like decoding)."""
    windows = [
        pipeline.localize_window(
            p.heatmap, p.score, audio, decoded.frame_size, post, time=time_s, objectness=p.objectness
        )
        for time_s, p, audio in zip(decoded.times, predictions, decoded.audio, strict=True)
    ]
    await upload.seek(0)  # read once already, for the windows
    data, name = await _read(upload, "video")
    pool = await service.renderer()
    mp4 = await pool.run(
        render.render_video_bytes,
        data,
        windows,
        start=options.start,
        end=options.end,
        threshold=service.sounding_threshold,
        limits=_render_limits(service),
        name=name,
    )
    stem = Path(name).stem or "video"
    return Response(
        mp4,
        media_type="video/mp4",
        headers={
            "Content-Disposition": f'attachment; filename="{_header_safe(stem)}.overlay.mp4"',
            "X-FNAC-Model": service.runtime.model_id,
            "X-FNAC-Windows": str(len(windows)),
        },
    )


def _header_safe(text: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in text)


def _split_form(form) -> tuple[dict[str, UploadFile], dict[str, str]]:
    uploads: dict[str, UploadFile] = {}
    options: dict[str, str] = {}
    for key, value in form.multi_items():
        if key in FILE_FIELDS:
            if key in uploads:
                raise ApiError(422, "duplicate_field", f"form field '{key}' was sent more than once")
            if not isinstance(value, UploadFile):
                raise ApiError(422, "not_a_file", f"form field '{key}' must be a file upload (filename=...)")
            uploads[key] = value
        elif key in OPTION_FIELDS:
            if isinstance(value, UploadFile):
                raise ApiError(422, "invalid_parameter", f"form field '{key}' must be text, not a file")
            options[key] = value
        else:
            raise ApiError(
                422,
                "unknown_field",
                f"unknown form field '{key}'; send 'video', or 'image' + 'audio' (options: {', '.join(sorted(OPTION_FIELDS))})",
            )
    if "video" in uploads and ({"image", "audio"} & uploads.keys()):
        raise ApiError(422, "conflicting_fields", "send either 'video', or 'image' + 'audio', not both")
    if "video" not in uploads:
        missing = [name for name in ("image", "audio") if name not in uploads]
        if len(missing) == 2:
            raise ApiError(422, "missing_field", "no upload: send a 'video' file, or 'image' + 'audio' files")
        if missing:
            raise ApiError(
                422, "missing_field", f"'{missing[0]}' is missing: 'image' and 'audio' go together"
            )
    return uploads, options


def _parse_options(request: Request, form_fields: dict[str, str]) -> LocalizeOptions:
    query = {k: v for k, v in request.query_params.items() if k in OPTION_FIELDS}
    try:
        return LocalizeOptions.model_validate({**query, **form_fields})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_parameter", problems) from None


async def _read(upload: UploadFile, field: str) -> tuple[bytes, str]:
    name = upload.filename or field
    data = await upload.read()
    if not data:
        raise ApiError(422, "empty_upload", f"'{name}' (field '{field}') is empty")
    return data, name


async def _decode(service: ServiceState, uploads, options: LocalizeOptions, keep_frame: bool) -> DecodedInput:
    common = {"t": options.t, "stride": options.stride, "keep_frames": keep_frame}
    if "video" in uploads:
        data, name = await _read(uploads["video"], "video")
        return await service.decode_pool.run(
            pipeline.decode_video,
            data,
            service.spec,
            name=name,
            start=options.start,
            end=options.end,
            **common,
        )
    image, image_name = await _read(uploads["image"], "image")
    audio, audio_name = await _read(uploads["audio"], "audio")
    return await service.decode_pool.run(
        pipeline.decode_image_audio,
        image,
        audio,
        service.spec,
        image_name=image_name,
        audio_name=audio_name,
        **common,
    )


def _inference_ms(predictions: list[Prediction]) -> float:
    # Windows of one request may share a batch; count each batch's model call once.
    return sum({p.batch_id: p.inference_ms for p in predictions}.values())


def _post_options(service: ServiceState, options: LocalizeOptions) -> PostOptions:
    settings = service.settings
    try:
        ogl_alpha = pipeline.ogl_alpha_for(service.runtime.metadata, options.ogl)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    return PostOptions(
        tau=service.runtime.metadata.tau,
        sounding_threshold=service.sounding_threshold,
        silence_dbfs=settings.silence_dbfs,
        box_threshold=settings.box_threshold if options.box_threshold is None else options.box_threshold,
        box_min_area=settings.box_min_area,
        boxes=options.boxes,
        ogl_alpha=ogl_alpha,
    )


def _localizations(
    decoded: DecodedInput, predictions: list[Prediction], post: PostOptions, with_png: bool
) -> list[Localization]:
    results = []
    for time_s, prediction, audio in zip(decoded.times, predictions, decoded.audio, strict=True):
        window = pipeline.localize_window(
            prediction.heatmap,
            prediction.score,
            audio,
            decoded.frame_size,
            post,
            time=time_s,
            objectness=prediction.objectness,
        )
        png = None
        if with_png:
            png = postprocess.png_base64(postprocess.heatmap_png(window.display_map(decoded.frame_size)))
        results.append(Localization.from_window(window, png))
    return results


def _render_png(
    decoded: DecodedInput, prediction: Prediction, post: PostOptions, kind: str
) -> tuple[bytes, WindowResult]:
    window = pipeline.localize_window(
        prediction.heatmap,
        prediction.score,
        decoded.audio[0],
        decoded.frame_size,
        post,
        time=decoded.times[0],
        objectness=prediction.objectness,
    )
    normalized = window.display_map(decoded.frame_size)
    if kind == "heatmap":
        return postprocess.heatmap_png(normalized), window
    return render.overlay_png(decoded.frames[0], normalized, window.boxes, sounding=window.sounding), window
