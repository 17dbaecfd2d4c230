"""Drawing localization results: the PNG overlay and bare map of one window, and the overlay video of a clip.

The rules, in one place (the demo page's player, service/static/index.html, follows the same ones):
- Colour: the heatmap, upsampled to the frame and min-max normalised as in `fnac.postprocess`, is quantised to
  8 bits (`postprocess.quantize`, the values of the bare-map PNG) and coloured with the jet colormap
  (blue -> cyan -> yellow -> red).
- Blend: the colours go over the frame with alpha 0.5 where the window is sounding and 0.2 where it is not (a
  dimmed map). Boxes are white outlines max(1, round(min(W, H) / 200)) px wide, drawn inside the box.
- Time (video): the windows of a sweep are centred every `stride` seconds. The map at time t interpolates
  linearly between the raw heatmaps of the two windows around t and is then upsampled, normalised and coloured
  as above; before the first window's centre and after the last one's, that window's map holds. The alpha is
  interpolated the same way, so the map fades as a sound stops. Boxes, score and sounding are the nearest
  window's (a tie goes to the earlier one), and a window that is not sounding shows no boxes.
- OGL (windows that serve the fused map): the objectness map is interpolated in time like the heatmap and the
  two are fused as `fnac.postprocess.fuse_objectness` does at the frame's size, so video, PNG and boxes agree.
- Frames (video): a frame shows the map at its presentation time, except that the frame on screen at a
  window's centre shows that window exactly, so it is the window's PNG overlay (plus the score indicator).
- Video: H.264 (libx264, yuv420p, `VideoEncoding`) at the displayed size, upright, the source's frame
  timestamps kept; the clip's own audio re-encoded as AAC. A top-left label gives the nearest window's score,
  the model's threshold and whether it is sounding.

The video path paints in the decoded YUV planes instead of converting every frame to RGB and back: blending is
linear, so blending in YUV with the jet colours converted by the frame's own colour matrix gives the same
picture as blending in RGB, at a fraction of the cost (docs/BENCHMARKS.md compares the whole render with a
plain FFmpeg transcode).

The modules, one job each: `overlay` (colours, blending, the PNG overlay), `timeline` (a sweep's windows as
functions of time), `yuv` (frames as YUV planes, their colour matrix), `painter` (the overlay painted into
YUV planes), `label` (the score label), `encode` (encoder settings, the MP4 writer) and `video` (the overlay
video of a clip, within `RenderLimits`).
"""

from fnac.render.encode import VideoEncoding
from fnac.render.label import LabelPatch, label_patch, label_region, label_text
from fnac.render.overlay import (
    BOX_COLOR,
    DIMMED_ALPHA,
    JET_LUT,
    OVERLAY_ALPHA,
    BoxLike,
    box_line_width,
    jet,
    map_alpha,
    overlay_image,
    overlay_png,
)
from fnac.render.painter import FramePainter, upsample_weights
from fnac.render.timeline import Timeline, Window, WindowLike
from fnac.render.video import (
    DEFAULT_STRIDE,
    RenderedVideo,
    RenderLimits,
    check_length,
    render_video,
    render_video_bytes,
)
from fnac.render.yuv import ColorMatrix, plane_arrays

__all__ = [
    "BOX_COLOR",
    "DEFAULT_STRIDE",
    "DIMMED_ALPHA",
    "JET_LUT",
    "OVERLAY_ALPHA",
    "BoxLike",
    "ColorMatrix",
    "FramePainter",
    "LabelPatch",
    "RenderLimits",
    "RenderedVideo",
    "Timeline",
    "VideoEncoding",
    "Window",
    "WindowLike",
    "box_line_width",
    "check_length",
    "jet",
    "label_patch",
    "label_region",
    "label_text",
    "map_alpha",
    "overlay_image",
    "overlay_png",
    "plane_arrays",
    "render_video",
    "render_video_bytes",
    "upsample_weights",
]
