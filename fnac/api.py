"""`fnac.Localizer`: the localization pipeline in a Python process, without a server.

    import fnac

    localizer = fnac.Localizer()                      # the bundled default model (or Localizer("my.onnx"))
    result = localizer.localize(video="clip.mp4")     # one window in the middle of the clip
    sweep = localizer.localize(video="clip.mp4", stride=0.5)
    still = localizer.localize(image=frame, audio=(waveform, 48000))
    localizer.render("clip.mp4", "clip.overlay.mp4")  # the overlay video (fnac.render)

Results are the HTTP API's response schema (`fnac.schemas.LocalizeResponse`, or `SweepResponse` with `stride`)
with the same numbers `POST /localize` answers for the same input and options; bad inputs raise
`fnac.LocalizeError` with the API's error code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TypedDict, Unpack

from fnac import contract, media, pipeline, postprocess, render, schemas
from fnac.errors import LocalizeError
from fnac.pipeline import BoxesMode, ImageInput, InputSpec, PostOptions
from fnac.runtime import ModelRuntime

default_model_path = contract.default_model_path


class Request(TypedDict, total=False):
    """The options of `Localizer.localize` and `Localizer.run` besides the clip (described in `localize`)."""

    image: ImageInput | None
    audio: media.Source | tuple | None
    t: float | None
    stride: float | None
    boxes: BoxesMode  # default "sounding"
    box_threshold: float | None
    ogl: bool | None


class Localizer:
    """Loads an FNAC ONNX model once and localizes clips, or frames + audio, with it.

    `model`: an exported `.onnx` file, or None for the bundled default model. `providers`: ONNX Runtime
    execution providers (short names such as "cuda", "cpu"; None: the GPU when there is one, else the CPU).
    The other settings match the service's (FNAC_* environment variables there): the sounding threshold
    (None: the model's calibrated value), the silence level, the box rules, the input limits.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        providers: list[str] | None = None,
        *,
        threads: int = 0,
        sounding_threshold: float | None = None,
        silence_dbfs: float = postprocess.SILENCE_DBFS,
        box_threshold: float = contract.BOX_THRESHOLD,
        box_min_area: float = contract.BOX_MIN_AREA,
        max_seconds: float = media.DEFAULT_MAX_SECONDS,
        max_pixels: int = media.DEFAULT_MAX_PIXELS,
        max_windows: int = pipeline.DEFAULT_MAX_WINDOWS,
        batch_size: int = 16,
    ):
        self.runtime = ModelRuntime(
            default_model_path() if model is None else model, providers=providers, intra_op_threads=threads
        )
        self.metadata = self.runtime.metadata
        self.sounding_threshold, self.sounding_threshold_source = pipeline.sounding_threshold_for(
            self.metadata, sounding_threshold
        )
        self.spec = InputSpec.for_model(
            self.metadata, max_seconds=max_seconds, max_pixels=max_pixels, max_windows=max_windows
        )
        self.silence_dbfs = silence_dbfs
        self.box_threshold = box_threshold
        self.box_min_area = box_min_area
        self.batch_size = batch_size

    @property
    def model_id(self) -> str:
        """name@sha256-prefix, as the service reports it."""
        return self.runtime.model_id

    def post_options(
        self, *, boxes: BoxesMode = "sounding", box_threshold: float | None = None, ogl: bool | None = None
    ) -> PostOptions:
        """This localizer's post-processing rules, with a request's options (`ogl=False`: the audio-visual
        map alone on a model with object-guided localization)."""
        try:
            ogl_alpha = pipeline.ogl_alpha_for(self.metadata, ogl)
        except ValueError as exc:
            raise LocalizeError("invalid_parameter", str(exc)) from None
        return PostOptions(
            tau=self.metadata.tau,
            sounding_threshold=self.sounding_threshold,
            silence_dbfs=self.silence_dbfs,
            box_threshold=self.box_threshold if box_threshold is None else box_threshold,
            box_min_area=self.box_min_area,
            boxes=boxes,
            ogl_alpha=ogl_alpha,
        )

    def localize(
        self, video: media.Source | None = None, *, heatmap_png: bool = False, **request: Unpack[Request]
    ) -> schemas.LocalizeResponse | schemas.SweepResponse:
        """Where in the frame the sound comes from: in a clip (`video`: a path or the file's bytes), or in a
        still frame + audio (`image`: path, bytes, uint8 [H, W, 3] RGB array or PIL image; `audio`: path,
        bytes, or `(waveform, sample_rate)`).

        `t`: the window's centre in seconds (default: the middle). `stride`: sweep the whole clip, one window
        every `stride` seconds (returns a `SweepResponse`). `boxes="always"`: boxes also for windows that are
        not sounding. `heatmap_png`: include the upsampled map as base64 PNG, as the API's option. `ogl`: on a
        model with object-guided localization, False serves the audio-visual map alone (default: the model's
        fused map; True on a model without an object branch is an error).
        """
        started = time.perf_counter()
        result, (decoded_at, inferred_at) = self._run(video, request)
        windows = [
            schemas.Localization.from_window(
                window,
                postprocess.png_base64(postprocess.heatmap_png(window.display_map(result.frame_size)))
                if heatmap_png
                else None,
            )
            for window in result.windows
        ]
        finished = time.perf_counter()
        timings = schemas.Timings(
            decode_ms=(decoded_at - started) * 1000,
            queue_ms=0.0,
            inference_ms=(inferred_at - decoded_at) * 1000,
            postprocess_ms=(finished - inferred_at) * 1000,
            total_ms=(finished - started) * 1000,
        )
        return schemas.response(
            windows,
            model=self.model_id,
            width=result.width,
            height=result.height,
            timings=timings,
            sounding_threshold=self.sounding_threshold,
            stride=request.get("stride"),
            duration=result.duration,
        )

    def run(self, video: media.Source | None = None, **request: Unpack[Request]) -> pipeline.Result:
        """`localize` without the JSON form: the pipeline's `Result`, whose windows carry the heatmaps as numpy
        arrays (what a renderer or further numpy work wants)."""
        return self._run(video, request)[0]

    def render(
        self,
        video: media.Source,
        out_path: str | Path,
        *,
        stride: float = render.DEFAULT_STRIDE,
        start: float | None = None,
        end: float | None = None,
        boxes: BoxesMode = "sounding",
        box_threshold: float | None = None,
    ) -> render.RenderedVideo:
        """Write the overlay video of a clip (`video`: a path or the file's bytes) to `out_path` (MP4): the clip
        at its displayed size with the heatmap of a window every `stride` seconds, interpolated between them,
        the boxes and a score label, and the clip's audio (the rules in `fnac.render`). `start`/`end`: only
        that stretch, in seconds. The same video `POST /localize?format=mp4` answers."""
        result, _ = self._run(
            video, Request(stride=stride, boxes=boxes, box_threshold=box_threshold), start=start, end=end
        )
        limits = render.RenderLimits(max_seconds=self.spec.max_seconds, max_pixels=self.spec.max_pixels)
        return render.render_video(
            video,
            result.windows,
            out_path,
            start=start,
            end=end,
            threshold=self.sounding_threshold,
            limits=limits,
            name=_name(video, "video"),
        )

    def _run(self, video, request: Request, *, start=None, end=None):
        """The pipeline on one request (`start`/`end`: only that stretch, for `render`), with the times decoding
        and inference finished."""
        unknown = request.keys() - Request.__optional_keys__
        if unknown:
            raise TypeError(f"got an unexpected keyword argument {min(unknown)!r}")
        options = self.post_options(
            boxes=request.get("boxes", "sounding"),
            box_threshold=request.get("box_threshold"),
            ogl=request.get("ogl"),
        )
        decoded = self._decode(video, request, start=start, end=end)
        decoded_at = time.perf_counter()
        heatmaps, scores, objectness = pipeline.run_model(
            self.runtime, decoded.images, decoded.audio, batch_size=self.batch_size
        )
        inferred_at = time.perf_counter()
        result = pipeline.localize_decoded(
            decoded, heatmaps, scores, options, stride=request.get("stride"), objectness=objectness
        )
        return result, (decoded_at, inferred_at)

    def _decode(self, video, request: Request, *, start=None, end=None) -> pipeline.DecodedInput:
        image, audio, t, stride = (request.get(key) for key in ("image", "audio", "t", "stride"))
        if stride is not None and not stride > 0:
            raise LocalizeError(
                "invalid_parameter", f"stride must be a positive number of seconds, not {stride}"
            )
        if t is not None and not t >= 0:
            raise LocalizeError("invalid_parameter", f"t must be a time in seconds >= 0, not {t}")
        if video is not None:
            if image is not None or audio is not None:
                raise LocalizeError("conflicting_fields", "give either video, or image + audio, not both")
            return pipeline.decode_video(
                video,
                self.spec,
                t=t,
                stride=stride,
                start=start,
                end=end,
                name=_name(video, "video"),
                frame_threads=True,  # one clip at a time in the caller's process: let FFmpeg use the cores
            )
        if image is None or audio is None:
            missing = (
                "video, or image + audio"
                if image is None and audio is None
                else ("image" if image is None else "audio")
            )
            raise LocalizeError(
                "missing_field", f"{missing} missing: give a video, or an image and its audio"
            )
        return pipeline.decode_image_audio(
            image,
            audio,
            self.spec,
            t=t,
            stride=stride,
            image_name=_name(image, "image"),
            audio_name=_name(audio, "audio"),
        )


def _name(source, default: str) -> str:
    return str(source) if isinstance(source, str | Path) else default
