"""The one PNG encoder: TensorBoard images, sample files and the server's image
responses all quantise and encode here, so one image is one byte string."""

import io

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pixels in [-1, 1] as uint8 0..255, rounded to the nearest level."""
    levels = np.round((np.asarray(images, np.float32) + 1) * 127.5)
    return np.clip(levels, 0, 255).astype(np.uint8)


def encode(image_HWC: np.ndarray) -> bytes:
    """An HWC image (C = 1 or 3) as PNG bytes: uint8 as it is, floats in [-1, 1]
    through `to_uint8`."""
    from PIL import Image

    pixels = image_HWC if image_HWC.dtype == np.uint8 else to_uint8(image_HWC)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()
