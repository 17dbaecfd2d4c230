"""Frames of an overlay video side by side, as one PNG (the strip in the README comes from this).

python scripts/overlay_strip.py phone.overlay.mp4 docs/images/overlay_strip.png --times 1.5 3 4.5 6 7.5
"""

from __future__ import annotations

import argparse

import av
import numpy as np
from PIL import Image, ImageDraw


def frames_at(path: str, times: list[float]) -> list[np.ndarray]:
    """The frame on screen at each time (ascending), upright as the file says it is shown."""
    shown, out = None, []
    with av.open(path) as container:
        for frame in container.decode(container.streams.video[0]):
            while len(out) < len(times) and frame.time > times[len(out)] + 1e-6:
                out.append(shown)
            if len(out) == len(times):
                break
            shown = frame.to_ndarray(format="rgb24")
    return out + [shown] * (len(times) - len(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("out")
    parser.add_argument("--times", type=float, nargs="+", required=True, help="seconds")
    parser.add_argument("--gap", type=int, default=6, help="pixels between frames")
    args = parser.parse_args()
    frames = frames_at(args.video, args.times)
    height, width = frames[0].shape[:2]
    caption = 18
    strip = Image.new("RGB", (len(frames) * width + (len(frames) - 1) * args.gap, height + caption), "white")
    draw = ImageDraw.Draw(strip)
    for k, (time, frame) in enumerate(zip(args.times, frames, strict=True)):
        left = k * (width + args.gap)
        strip.paste(Image.fromarray(frame), (left, 0))
        draw.text((left + width // 2, height + caption // 2), f"t = {time:g} s", fill="black", anchor="mm")
    strip.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
