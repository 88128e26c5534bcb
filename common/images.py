"""Image preprocessing: ONE function used identically by training and serving.

Decode (PNG, JPEG, WebP, ... with Pillow), refuse decompression bombs, convert to grayscale or
RGB, resize to the model's size, scale to [0, 1] and flatten row-major (height, width, channel).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from common.domain import ImageSpec
from common.errors import BadRequest

# Pillow's own guard against decompression bombs, applied as an error (not a warning).
MAX_IMAGE_PIXELS = 32 * 1024 * 1024
# Shrinking averages areas (like OpenCV's INTER_AREA: block-scaled images come back exactly);
# enlarging interpolates bilinearly.
SHRINK = Image.Resampling.BOX
ENLARGE = Image.Resampling.BILINEAR
ANNOTATED_SIDE = 256
CAPTION_HEIGHT = 28
INPUT_NAME = "pixels"
# Only these decoders are ever used on uploads (no EPS/Ghostscript or other exotic plugins).
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


def preprocess(data: bytes, spec: ImageSpec, name: str = "image") -> np.ndarray:
    """The model's view of an image: float32 pixels in [0, 1], shape (n_pixels,)."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                img.load()
                converted = img.convert(spec.mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest(
            f"{name}: more than {MAX_IMAGE_PIXELS} pixels (decompression bomb guard)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadRequest(f"{name}: not a decodable image ({type(exc).__name__})") from None
    if converted.size != (spec.width, spec.height):
        shrinking = converted.width >= spec.width and converted.height >= spec.height
        converted = converted.resize((spec.width, spec.height), SHRINK if shrinking else ENLARGE)
    return np.asarray(converted, dtype=np.float32).reshape(-1) / 255.0


def to_image(pixels: np.ndarray, spec: ImageSpec) -> Image.Image:
    """Pixels in [0, 1] back to a Pillow image of the model's size."""
    shape = (spec.height, spec.width) if spec.mode == "L" else (spec.height, spec.width, 3)
    values = np.clip(np.asarray(pixels, dtype=np.float32).reshape(shape) * 255.0, 0, 255)
    return Image.fromarray(values.round().astype(np.uint8), mode=spec.mode)


def annotated_size(spec: ImageSpec) -> tuple[int, int]:
    """Width and height of the annotated PNG the API returns."""
    k = max(1, ANNOTATED_SIDE // max(spec.width, spec.height))
    return spec.width * k, spec.height * k + CAPTION_HEIGHT


def annotate(pixels: np.ndarray, spec: ImageSpec, caption: str) -> bytes:
    """The input as the model saw it, enlarged (nearest neighbour), with a caption band: PNG."""
    width, height = annotated_size(spec)
    body = to_image(pixels, spec).convert("RGB").resize(
        (width, height - CAPTION_HEIGHT), Image.Resampling.NEAREST
    )
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(body, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=16)
    draw.text((6, height - CAPTION_HEIGHT + 5), caption, fill="black", font=font)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
