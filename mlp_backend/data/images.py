"""Turn an image of a digit into the 28x28 image an MNIST model expects, the way MNIST was made.

LeCun et al. describe MNIST's normalisation: each digit was "size normalized to fit in a
20x20 pixel box while preserving [its] aspect ratio" (with anti-aliasing, hence the grey
levels), then "centered in a 28x28 image by computing the center of mass of the pixels, and
translating the image so as to position this point at the center of the 28x28 field".
Measured on the MNIST test set: the ink's bounding box is exactly 20 pixels on its longer
side for every digit, and the centre of mass sits at row/column index 14.0 (std 0.29), i.e.
an integer translation. :func:`mnist_normalize` does the same, so a digit drawn anywhere, at
any size, on a canvas reaches the network as MNIST's own digits do. :func:`image_row` is the
whole path from an image file (or its bytes) to the row the model gets; ``mlp-backend predict``
and ``mlp-backend serve`` both use it, so the same image gets the same answer from each.

>>> img = np.zeros((300, 300), np.uint8); img[40:200, 100:120] = 255   # a tall bar, off-centre
>>> out = mnist_normalize(img)
>>> out.shape, out.dtype
((28, 28), dtype('uint8'))
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mlp_backend.data.errors import DataError

__all__ = ["image_row", "mnist_normalize", "ImageTooLarge", "IMAGE_SUFFIXES", "BOX", "SIDE", "CENTRE"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # read as images

SIDE = 28      # the output image is SIDE x SIDE
BOX = 20       # the longer side of the ink's bounding box after scaling
CENTRE = 14    # where the centre of mass lands (row and column index), as measured on MNIST


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    m = a.sum()
    return (float((a.sum(1) * np.arange(a.shape[0])).sum() / m),
            float((a.sum(0) * np.arange(a.shape[1])).sum() / m))


def mnist_normalize(image, threshold: float = 0.1) -> np.ndarray:
    """A 2-D grayscale image of one digit, white ink on black, as a (28, 28) uint8 MNIST digit.

    ``image``: a (H, W) array of ink intensities (uint8 0..255 or floats 0..1), or a PIL image
    (converted to grayscale). Pixels brighter than ``threshold`` times the brightest one
    count as ink for the bounding box, so faint anti-aliasing or scanner noise does not
    stretch it. The box is cropped, scaled (area-averaging, aspect ratio kept) so its longer
    side is 20 pixels, and placed in a black 28x28 image with its centre of mass at (14, 14)
    (ink that would fall outside is cut, as in MNIST). An image with no ink gives zeros.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("L"))
    a = np.asarray(image)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"expected a non-empty 2-D grayscale image, got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"expected integer or float pixels, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("the image has NaN or infinite pixels")
    if a.max(initial=0) <= 1.0 and not np.issubdtype(np.asarray(image).dtype, np.integer):
        a = a * 255.0  # floats in [0, 1]
    a = np.clip(a, 0.0, 255.0)
    out = np.zeros((SIDE, SIDE), np.uint8)
    top = a.max(initial=0)
    if top <= 0:
        return out
    rows, cols = np.nonzero(a > threshold * top)
    crop = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
    small = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX))
    small = np.clip(small, 0.0, 255.0)
    if small.sum() <= 0:
        return out
    cy, cx = _centre_of_mass(small)
    oy, ox = int(round(CENTRE - cy)), int(round(CENTRE - cx))
    # paste small at (oy, ox), cutting what falls outside the 28x28 field
    y0, x0 = max(oy, 0), max(ox, 0)
    y1, x1 = min(oy + small.shape[0], SIDE), min(ox + small.shape[1], SIDE)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = np.round(small[y0 - oy:y1 - oy, x0 - ox:x1 - ox]).astype(np.uint8)
    return out


class ImageTooLarge(DataError):
    """An image with more pixels than the caller accepts."""


def image_row(source, *, invert: "bool | None" = False, max_pixels: "int | None" = None) -> np.ndarray:
    """An image of one digit -- a file path, or the file's bytes -- as the (784,) uint8 row the model gets.

    The image is converted to grayscale; ``invert=True`` turns dark ink on light paper into
    MNIST's light ink on black (``invert=None``: when the image's border is mostly light,
    mean border pixel > 127; ``False``: never); then :func:`mnist_normalize` makes it an
    MNIST digit. Raises :class:`ImageTooLarge` when the image has more than ``max_pixels``
    pixels (checked before it is decoded), and PIL's errors (``UnidentifiedImageError``,
    ``OSError``, ``Image.DecompressionBombError``) when it cannot be read.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLarge(f"the image is {w}x{h}; at most {max_pixels} pixels")
        gray = np.asarray(im.convert("L"))
    if invert is None:
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        invert = bool(border.mean() > 127)
    return mnist_normalize(255 - gray if invert else gray).reshape(SIDE * SIDE)
