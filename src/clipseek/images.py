"""Opening and validating one image.

Every image clipseek reads (an indexed file, an uploaded query, a downloaded URL) goes through
:func:`load_image`, which either returns an RGB ``PIL.Image`` ready for an encoder or raises
:class:`~clipseek.errors.BadImage` with a message that names the item and the reason.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import BadImage

# Files we index from folders. GIFs and multi-page TIFFs contribute their first frame.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

#: Images above this many pixels are refused as possible decompression bombs (about 16k x 16k).
DEFAULT_MAX_PIXELS = 256_000_000

#: Encoders never need more than this on the short side; big JPEGs decode at reduced size (draft).
DRAFT_SIZE = 448

ImageFile.LOAD_TRUNCATED_IMAGES = False


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: int | None = DRAFT_SIZE,
) -> Image.Image:
    """Open, check and decode an image from a path or from bytes; return it as RGB.

    Raises BadImage for: an empty file, bytes that are not an image, a truncated or corrupt file,
    an image larger than ``max_pixels``, or an unreadable path.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        if isinstance(source, bytes):
            if not source:
                raise BadImage(f"{label}: empty data")
            fp: io.BytesIO | Path = io.BytesIO(source)
        else:
            fp = Path(source)
            size = fp.stat().st_size
            if size == 0:
                raise BadImage(f"{label}: empty file")
        with warnings.catch_warnings():
            # Pillow warns (DecompressionBombWarning) between max/2 and max; we decide ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                img = Image.open(fp)
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
        w, h = img.size
        if w <= 0 or h <= 0:
            raise BadImage(f"{label}: image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise BadImage(
                f"{label}: image too large ({w}x{h} = {w * h:,} pixels, limit {max_pixels:,}); "
                "possible decompression bomb"
            )
        if draft and img.format == "JPEG":
            img.draft("RGB", (draft, draft))
        img.load()
        upright: Image.Image = ImageOps.exif_transpose(img) or img
        return to_rgb(upright)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage(f"{label}: no such file") from None
    except PermissionError:
        raise BadImage(f"{label}: permission denied") from None
    except IsADirectoryError:
        raise BadImage(f"{label}: is a directory") from None
    except UnidentifiedImageError:
        raise BadImage(f"{label}: not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError with its own wording.
        raise BadImage(f"{label}: corrupt or truncated image ({e})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for an encoder: transparency flattened onto white, 16-bit greyscale rescaled to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Flatten transparency onto white, as a viewer would show it.
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale (scientific / medical images): rescale to 8 bits instead of clipping.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else arr * 0
        img = Image.fromarray(arr.astype("uint8"), "L")
    return img.convert("RGB")
