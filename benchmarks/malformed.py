"""Malformed uploads for `POST /localize`: a corpus of bad requests and a client that sends them.

Each `BadUpload` is one kind of bad input (empty, truncated, corrupt, hostile, oversized, slow, wrongly
shaped multipart, nonsense options, ...) with the 4xx statuses the service may answer it with. Media are
generated here, never downloaded; the corpus depends only on the server's limits, so the same generator serves
the fast test (`tests/reliability/test_malformed.py`) and `python -m benchmarks.reliability malformed`.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

CLIP_SIZE = (64, 48)  # width, height of the small valid clip the corruptions start from
UPLOAD_RATE = 16000


@dataclass(frozen=True)
class Limits:
    """The server's FNAC_* input limits the corpus is built against."""

    max_upload_bytes: int
    max_parts: int
    max_clip_seconds: float
    max_image_pixels: int
    max_windows: int


@dataclass
class BadUpload:
    """One bad request: a raw body (usually multipart) sent with `headers`, optionally in timed chunks."""

    kind: str
    what: str
    expect: frozenset[int]
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    chunk_bytes: int = 0  # > 0: sent chunked (no Content-Length), this many bytes per chunk
    chunk_delay_s: float = 0.0  # pause before each chunk (a slow client)

    def content(self) -> bytes | Iterator[bytes]:
        if not self.chunk_bytes:
            return self.body

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(self.body), self.chunk_bytes):
                if self.chunk_delay_s:
                    time.sleep(self.chunk_delay_s)
                yield self.body[start : start + self.chunk_bytes]

        return chunks()


@dataclass
class Outcome:
    kind: str
    status: int | None  # None: no HTTP answer at all (see `error`)
    code: str | None  # the JSON error code, None when the body was not the error envelope
    seconds: float
    error: str | None = None

    @property
    def clean_4xx(self) -> bool:
        return self.status is not None and 400 <= self.status < 500 and self.code is not None


# ---------------------------------------------------------------------------------------------- media


def encode_clip(
    seconds: float = 4.0,
    *,
    size: tuple[int, int] = CLIP_SIZE,
    fps: int = 10,
    audio: bool = True,
    container: str = "mp4",
    codec: str = "libx264",
    gop: int | None = None,
    audio_codec: str = "aac",
    audio_rate: int = UPLOAD_RATE,
    textured: bool = False,
) -> bytes:
    """A valid clip: frames with a moving bright square and (optionally) a tone. `textured` pans over a
    detailed random scene instead, so the encoder spends a realistic bitrate (a few Mbit/s at 720p)."""
    import av

    width, height = size
    scene = _scene(width, height) if textured else None
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if gop:
            video.codec_context.gop_size = gop
        sound = out.add_stream(audio_codec, rate=audio_rate, layout="mono") if audio else None
        for i in range(round(seconds * fps)):
            if scene is not None:
                frame = np.ascontiguousarray(scene[:, i * 3 : i * 3 + width])
            else:
                frame = np.full((height, width, 3), 30, np.uint8)
                x = (i * 4) % max(width - height // 3, 1)
                frame[height // 3 : 2 * height // 3, x : x + height // 3] = 240
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            t = np.arange(round(seconds * audio_rate)) / audio_rate
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, wave.size, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[None, start : start + 1024]), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = audio_rate, start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return buffer.getvalue()


def _scene(width: int, height: int) -> np.ndarray:
    """A wide detailed picture to pan over: smooth random blobs plus fine grain, uint8 [H, W + 2000, 3]."""
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = rng.integers(0, 256, (height // 16, (width + 2000) // 16, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(blobs).resize((width + 2000, height), Image.Resampling.BICUBIC))
    grain = rng.integers(-12, 13, smooth.shape)
    return np.clip(smooth.astype(int) + grain, 0, 255).astype(np.uint8)


def encode_image(width: int = 64, height: int = 48, fmt: str = "PNG") -> bytes:
    from PIL import Image

    frame = np.zeros((height, width, 3), np.uint8)
    frame[height // 4 : height // 2, width // 4 : width // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=fmt)
    return buffer.getvalue()


def wav_bytes(samples: np.ndarray | None, rate: int, *, channels: int = 1) -> bytes:
    """A PCM s16 WAV written by hand, so its header can say anything (absurd rates, no samples)."""
    pcm = b"" if samples is None else (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    block = 2 * channels
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, 16)
    return header + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm


def tone_wav(seconds: float = 3.0, rate: int = UPLOAD_RATE) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return wav_bytes(0.3 * np.sin(2 * np.pi * 440 * t), rate)


def long_silence_flac(seconds: float, rate: int = 8000) -> bytes:
    """`seconds` of silence as FLAC: an hour is ~0.6 MB, a decompression bomb for the audio path."""
    import av

    buffer = io.BytesIO()
    block = rate * 10
    silence = np.zeros((1, block), np.int16)
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        for i in range(round(seconds / 10)):
            frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * block
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def long_clip_mkv(seconds: float, rate: int = 8000) -> bytes:
    """One small video frame + `seconds` of FLAC silence in Matroska: a long clip that costs little to send."""
    import av

    buffer = io.BytesIO()
    block = rate * 10
    with av.open(buffer, "w", format="matroska") as out:
        video = out.add_stream("mpeg4", rate=1)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("flac", rate=rate, layout="mono")
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        for packet in [*video.encode(frame), *video.encode()]:
            out.mux(packet)
        silence = np.zeros((1, block), np.int16)
        for i in range(round(seconds / 10)):
            chunk = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = rate, i * block
            for packet in sound.encode(chunk):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    return buffer.getvalue()


def clip_without_frames() -> bytes:
    """Matroska with a declared video stream that never carries a frame, plus 1 s of audio."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=UPLOAD_RATE, layout="mono")
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, UPLOAD_RATE), np.int16), format="s16", layout="mono")
        chunk.sample_rate, chunk.pts = UPLOAD_RATE, 0
        for packet in [*sound.encode(chunk), *sound.encode(), *video.encode()]:
            out.mux(packet)
    return buffer.getvalue()


def malformed_codec(mkv: bytes) -> bytes:
    """A Matroska file with its video codec id replaced by one no decoder knows (same length, so it parses)."""
    at = mkv.find(b"V_MPEG4")
    return mkv[:at] + b"V_XXXXX" + mkv[at + 7 :]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_file(ihdr: bytes, idat: bytes) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_bomb(side: int) -> bytes:
    """A VALID side x side 1-bit greyscale PNG of zeros: ~side²/8 bytes inflated, ~0.1 % of that on the wire."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return _png_file(struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0), idat)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB, followed by a few bytes of pixel data."""
    return _png_file(struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0), zlib.compress(b"\x00" * 4096))


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG with its frame header (SOF0) patched to claim width x height."""
    data = bytearray(encode_image(fmt="JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def multipart(parts: list[tuple], boundary: str = "fnac-malformed-boundary") -> tuple[bytes, str]:
    """Encode parts by hand (duplicates, text where files belong, odd names are all allowed).

    A part is (field, filename or None, content bytes, content type or None).
    """
    chunks = []
    for name, filename, content, content_type in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        chunks.append(head.encode("utf-8", "surrogateescape") + b"\r\n" + content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------------------------------------- corpus

E413, E422, E400_422, E413_422 = (
    frozenset({413}),
    frozenset({422}),
    frozenset({400, 422}),
    frozenset({413, 422}),
)


def build_corpus(limits: Limits, seed: int = 0) -> list[BadUpload]:
    """Every kind of bad upload, for a server with these limits. Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    clip = encode_clip()
    png, jpeg, wav = encode_image(), encode_image(fmt="JPEG"), tone_wav()
    corpus: list[BadUpload] = []

    def add(kind: str, what: str, expect: frozenset[int], parts: list[tuple], **extra) -> None:
        body, content_type = multipart(parts)
        corpus.append(BadUpload(kind, what, expect, body, {"Content-Type": content_type}, **extra))

    def video(data: bytes, name: str = "clip.mp4") -> list[tuple]:
        return [("video", name, data, "video/mp4")]

    def pair(image: bytes, audio: bytes) -> list[tuple]:
        return [("image", "frame.png", image, "image/png"), ("audio", "sound.wav", audio, "audio/wav")]

    def raw(kind: str, what: str, expect: frozenset[int], body: bytes, content_type: str | None, **extra):
        headers = {"Content-Type": content_type} if content_type else {}
        corpus.append(BadUpload(kind, what, expect, body, headers, **extra))

    # -- HTTP / multipart shape
    raw(
        "json_body",
        "JSON instead of multipart",
        frozenset({415}),
        b'{"video": "clip.mp4"}',
        "application/json",
    )
    raw("no_content_type", "raw clip bytes, no Content-Type", frozenset({415}), clip, None)
    raw(
        "multipart_no_boundary", "multipart without a boundary", frozenset({400}), clip, "multipart/form-data"
    )
    body, _ = multipart(video(clip), boundary="the-real-one")
    raw(
        "multipart_wrong_boundary",
        "boundary in the header differs from the body's",
        E400_422,
        body,
        "multipart/form-data; boundary=another-one",
    )
    unterminated = multipart(video(clip))[0].rsplit(b"--fnac-malformed-boundary--", 1)[0]
    raw(
        "multipart_unterminated",
        "no closing boundary",
        E400_422,
        unterminated,
        "multipart/form-data; boundary=fnac-malformed-boundary",
    )
    raw(
        "empty_body",
        "multipart Content-Type, empty body",
        E400_422,
        b"",
        "multipart/form-data; boundary=fnac-malformed-boundary",
    )
    add("options_only", "only an option, no file", E422, [("t", None, b"1.0", None)])
    add("wrong_field_name", "the clip in field 'file'", E422, [("file", "clip.mp4", clip, "video/mp4")])
    add("field_name_case", "the clip in field 'Video'", E422, [("Video", "clip.mp4", clip, "video/mp4")])
    add("duplicate_video", "two 'video' files", E422, video(clip) + video(clip))
    add("video_and_pair", "'video' and 'image' + 'audio' together", E422, video(clip) + pair(png, wav))
    add("image_without_audio", "'image' alone", E422, [("image", "frame.png", png, "image/png")])
    add("video_as_text", "'video' as a text field (no filename)", E422, [("video", None, clip[:200], None)])
    add(
        "option_as_file",
        "option 't' sent as a file",
        E422,
        [*video(clip), ("t", "t.txt", b"1", "text/plain")],
    )
    add(
        "many_text_parts",
        f"{limits.max_parts * 20} text parts",
        frozenset({400}),
        [(f"f{i}", None, b"x", None) for i in range(limits.max_parts * 20)],
    )
    add(
        "many_file_parts",
        f"{limits.max_parts * 8} file parts",
        frozenset({400}),
        [("video", f"c{i}.mp4", b"\x00" * 16, "video/mp4") for i in range(limits.max_parts * 8)],
    )
    add(
        "huge_filename",
        "a 32 KB filename on random bytes",
        E400_422,
        [("video", "a" * 32768 + ".mp4", rng.bytes(4096), "video/mp4")],
    )
    add(
        "hostile_filename",
        "path traversal + quotes in the filename",
        E422,
        [("video", "../../etc/passwd%00.mp4';<script>", rng.bytes(4096), "video/mp4")],
    )
    oversize = limits.max_upload_bytes + 1024
    add("body_over_limit", f"{oversize} bytes with Content-Length", E413, video(rng.bytes(oversize)))
    corpus.append(
        BadUpload(
            "body_over_limit_chunked",
            f"{oversize} bytes chunked, no Content-Length",
            E413,
            *_body_headers(video(rng.bytes(oversize))),
            chunk_bytes=65536,
        )
    )
    corpus.append(
        BadUpload(
            "slow_upload",
            "random bytes trickled for ~2 s (64 B every 0.05 s)",
            E422,
            *_body_headers(video(rng.bytes(2048))),
            chunk_bytes=64,
            chunk_delay_s=0.05,
        )
    )
    # -- options
    add("t_negative", "t=-1", E422, video(clip), params={"t": "-1"})
    add("t_nan", "t=nan", E422, video(clip), params={"t": "nan"})
    add("t_past_end", "t=1e9 on a 4 s clip", E422, video(clip), params={"t": "1e9"})
    add("t_not_a_number", "t=abc", E422, video(clip), params={"t": "abc"})
    add("stride_tiny", "stride=1e-9 (a billion windows)", E413, video(clip), params={"stride": "1e-9"})
    add(
        "stride_tiny_pair",
        "stride=1e-300 on image + 6 s audio",
        E413,
        pair(png, tone_wav(6.0)),
        params={"stride": "1e-300"},
    )
    add("stride_with_png", "a sweep asked as PNG", E422, video(clip), params={"stride": "1", "format": "png"})
    add("format_unknown", "format=gif", E422, video(clip), params={"format": "gif"})
    add("box_threshold_range", "box_threshold=2", E422, video(clip), params={"box_threshold": "2"})
    # -- media: empty, random, truncated, corrupt
    add("empty_video", "a 0-byte clip", E422, video(b""))
    add("empty_pair", "0-byte image and audio", E422, pair(b"", b""))
    add("random_video", "64 KB of random bytes as a clip", E422, video(rng.bytes(65536)))
    add("zeros_video", "64 KB of zeros as a clip", E422, video(bytes(65536)))
    add("random_pair", "random bytes as image and audio", E422, pair(rng.bytes(8192), rng.bytes(8192)))
    for fraction in (0.002, 0.25, 0.5, 0.9, 0.99):
        cut = max(int(len(clip) * fraction), 1)
        add(
            f"clip_truncated_{fraction:g}",
            f"mp4 cut after {cut} of {len(clip)} bytes",
            E422,
            video(clip[:cut]),
        )
    corrupt = bytearray(clip)
    corrupt[:64] = rng.bytes(64)
    add("clip_header_corrupt", "mp4 with its first 64 bytes random", E422, video(bytes(corrupt)))
    corrupt = bytearray(clip)
    moov = clip.find(b"moov")
    corrupt[moov : moov + 300] = rng.bytes(300)
    add("clip_index_corrupt", "mp4 with its index (moov) scrambled", E422, video(bytes(corrupt)))
    add("png_truncated", "PNG cut in half", E422, pair(png[: len(png) // 2], wav))
    add("jpeg_truncated", "JPEG cut in half", E422, pair(jpeg[: len(jpeg) // 2], wav))
    corrupt = bytearray(png)
    corrupt[16:24] = b"\xff" * 8  # IHDR width/height, CRC now wrong
    add("png_header_corrupt", "PNG with a scrambled IHDR", E422, pair(bytes(corrupt), wav))
    add(
        "jpeg_header_only",
        "JPEG SOI marker then random bytes",
        E422,
        pair(b"\xff\xd8\xff\xe0" + rng.bytes(512), wav),
    )
    add(
        "wav_header_corrupt",
        "WAV with a scrambled fmt chunk",
        E422,
        pair(png, wav[:12] + rng.bytes(32) + wav[44:]),
    )
    # -- polyglots and the wrong kind of file in a field
    add("polyglot_png_mp4", "a PNG with an mp4 appended, as the clip", E422, video(png + clip))
    add(
        "polyglot_html_png",
        "HTML then a PNG, as the image",
        E422,
        pair(b"<html><script>alert(1)</script></html>" + png, wav),
    )
    add(
        "polyglot_mp4_zip",
        "an mp4 whose start is a ZIP header, as the clip",
        E422,
        video(b"PK\x03\x04" + b"\x00" * 26 + clip),
    )
    add("image_in_audio_field", "a PNG as the audio", E422, pair(png, png))
    add("audio_in_image_field", "a WAV as the image", E422, pair(wav, wav))
    add("image_in_video_field", "a PNG as the clip", E422, video(png, "frame.png"))
    add("audio_in_video_field", "a WAV as the clip (no video stream)", E422, video(wav, "sound.wav"))
    add("clip_without_audio", "an mp4 with no audio stream", E422, video(encode_clip(2, audio=False)))
    add(
        "clip_without_frames", "a video stream with no frames", E422, video(clip_without_frames(), "clip.mkv")
    )
    unknown = malformed_codec(clip_without_frames())
    add(
        "clip_unknown_codec",
        "a Matroska video track with an unknown codec id",
        E422,
        video(unknown, "clip.mkv"),
    )
    add("zero_length_audio", "a WAV header with 0 samples", E422, pair(png, wav_bytes(None, UPLOAD_RATE)))
    # -- bombs and limits
    add("one_hour_audio", "1 h of FLAC silence (~0.6 MB)", E413, pair(png, long_silence_flac(3600)))
    add("one_hour_clip", "1 frame + 1 h of audio in Matroska", E413, video(long_clip_mkv(3600), "long.mkv"))
    add("image_20k", "a PNG whose header says 20000 x 20000", E413, pair(png_header_only(20000, 20000), wav))
    add("png_bomb", "a valid 30000 x 30000 PNG (~100 KB)", E413, pair(png_bomb(30000), wav))
    add("jpeg_bomb", "a JPEG claiming 65000 x 65000", E413, pair(jpeg_with_size(65000, 65000), wav))
    side = int(limits.max_image_pixels**0.5) + 16
    side += side % 2
    add(
        "clip_frames_too_large",
        f"a {side} x {side} H.264 clip",
        E413,
        video(encode_clip(0.2, size=(side, side), fps=5)),
    )
    add("rate_1hz", "a WAV at 1 Hz (hours per sample)", E413_422, pair(png, wav_bytes(np.zeros(64), 1)))
    add("rate_0hz", "a WAV at 0 Hz", E422, pair(png, wav_bytes(np.zeros(64), 0)))
    add("rate_4ghz", "a WAV at 4294967295 Hz", E413_422, pair(png, wav_bytes(np.zeros(64), 0xFFFFFFFF)))
    add(
        "rate_2ghz",
        "a WAV at 2147483647 Hz (the resampler gives up)",
        E422,
        pair(png, wav_bytes(np.zeros(3000), 2**31 - 1)),
    )
    return corpus


def _body_headers(parts: list[tuple]) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart(parts)
    return body, {"Content-Type": content_type}


# ---------------------------------------------------------------------------------------------- client


def send(client, base: str, upload: BadUpload, headers: dict[str, str] | None = None) -> Outcome:
    """POST one bad upload with an httpx.Client; never raises (a transport failure is in `error`)."""
    started = time.perf_counter()
    try:
        response = client.post(
            f"{base}/localize",
            content=upload.content(),
            headers={**upload.headers, **(headers or {})},
            params=upload.params,
        )
    except Exception as exc:  # the point is to record it, whatever the transport did
        return Outcome(upload.kind, None, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - started
    code = None
    try:
        error = response.json()["error"]
        if isinstance(error.get("code"), str) and isinstance(error.get("message"), str) and error["message"]:
            code = error["code"]
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return Outcome(upload.kind, response.status_code, code, elapsed)


def send_all(
    base: str, corpus: list[BadUpload], timeout_s: float, on_each: Callable | None = None
) -> list[Outcome]:
    """Send the corpus one request at a time, each on a fresh connection."""
    import httpx

    outcomes = []
    for upload in corpus:
        with httpx.Client(timeout=timeout_s) as client:
            outcome = send(client, base, upload)
        outcomes.append(outcome)
        if on_each:
            on_each(upload, outcome)
    return outcomes
