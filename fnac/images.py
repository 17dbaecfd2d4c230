"""Still images via Pillow: decoded to 8-bit RGB as displayed (EXIF orientation), with the pixel limit checked
before any pixel data is decoded."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from fnac.media import DEFAULT_MAX_PIXELS, MediaError, MediaTooLarge, Source, in_words


def decode_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload") -> np.ndarray:
    """Decode an image file to uint8 [H, W, 3] RGB (the pixels of `open_image`)."""
    return np.array(open_image(source, max_pixels=max_pixels, name=name), dtype=np.uint8)


def open_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload") -> Image.Image:
    """Decode an image file to a loaded 8-bit RGB PIL image.

    EXIF orientation is applied; grey, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted to
    8-bit RGB. The pixel count is checked from the header before any pixel data is decoded, so a
    decompression bomb is rejected cheaply with `MediaTooLarge(code="image_too_large")`. Resizing this image
    (`resize_image`) skips the copy into and out of numpy that `decode_image` costs.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            width, height = img.size
            if width * height > max_pixels:
                raise MediaTooLarge(
                    "image_too_large",
                    f"image in '{name}' is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                )
            ImageOps.exif_transpose(img, in_place=True)  # in place: an upright picture is not copied
            rgb = _to_rgb(img)
            rgb.load()
            return rgb
    except (MediaError, FileNotFoundError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaTooLarge(
            "image_too_large", f"image in '{name}' is too large to decode: {in_words(exc)}"
        ) from None
    except Image.UnidentifiedImageError:
        raise MediaError("unreadable_image", f"'{name}' is not an image format we can read") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt pixel data
        raise MediaError(
            "corrupt_image", f"image in '{name}' could not be decoded: {in_words(exc)}"
        ) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale (PNG opens as "I;16" or "I"): scale to 8 bits instead of clipping at 255.
        grey = np.asarray(img, dtype=np.float64) / 257.0
        return _grey_to_rgb(grey)
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        return _grey_to_rgb(grey * 255.0 if grey.size and grey.max() <= 1.0 else grey)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning; alpha dropped below
    return img if img.mode == "RGB" else img.convert("RGB")


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey8[..., None], 3, axis=2), mode="RGB")
