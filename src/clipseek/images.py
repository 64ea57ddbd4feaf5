"""Opening and validating one image.

Every image clipseek reads (an indexed file, an uploaded query, a downloaded URL) goes through
:func:`load_image`, which either returns an RGB ``PIL.Image`` ready for an encoder or raises
:class:`~clipseek.errors.BadImage` with a message that names the item and the reason.

Two limits keep memory bounded: an image above ``max_pixels`` is refused from its header, before
any pixel is decoded, and an image is reduced to what an encoder needs (``fit``) right after
decoding (JPEGs already while decoding), so only the images being decoded are ever held at full size.
"""

from __future__ import annotations

import io
import struct
import threading
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import BadImage, TooManyPixels

# Files we index from folders. GIFs and multi-page TIFFs contribute their first frame.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

#: Images above this many pixels are refused as possible decompression bombs (about 16k x 16k).
DEFAULT_MAX_PIXELS = 256_000_000

#: Default short side images are reduced to (never below): twice the 224 input of CLIP-family
#: towers, so the encoder's own resize still sees more pixels than it keeps.
DEFAULT_FIT = 448

# Modes Image.reduce averages correctly; others (palette, 1-bit, 16-bit) go to RGB first.
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "I", "F", "CMYK", "YCbCr"})

#: ``Image.info`` key of a loaded image's (width, height) before any reduction.
SOURCE_SIZE = "clipseek.source_size"

ImageFile.LOAD_TRUNCATED_IMAGES = False


class PixelBudget:
    """Bounds the pixels being decoded at full size at once, across threads.

    A decode takes its image's pixel count before decoding and gives it back once the image is
    reduced. An image larger than the whole budget is still decoded, alone.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self._used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._used == 0 or self._used + n <= self.pixels)
            self._used += n

    def release(self, n: int) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fit: int | None = DEFAULT_FIT,
    budget: PixelBudget | None = None,
    draft: int | None = None,
) -> Image.Image:
    """Open, check and decode an image from a path or from bytes; return it as RGB.

    With ``fit``, an image whose shorter side is at least twice ``fit`` is reduced by an integer
    factor (box average; JPEG: DCT scaling while decoding) to a shorter side of at least ``fit``.
    ``draft`` (default ``fit``) is the side a JPEG's DCT scaling may go down to instead: an encoder
    may accept that cheaper decode at a lower side than the box reduction it accepts.
    With ``budget``, the full-size decode waits until its pixels fit in the budget.

    Raises BadImage for: an empty path or file, bytes that are not an image, a truncated or
    corrupt file, an image larger than ``max_pixels``, or an unreadable path.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        if isinstance(source, bytes):
            if not source:
                raise BadImage(f"{label}: empty data")
            return _decode(io.BytesIO(source), label, max_pixels, fit, budget, draft)
        if not str(source):
            raise BadImage("empty image path: give the path of an image file")
        path = Path(source)
        with path.open("rb") as fp:
            if path.stat().st_size == 0:
                raise BadImage(f"{label}: empty file")
            return _decode(fp, label, max_pixels, fit, budget, draft)
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


def _decode(fp: IO[bytes], label: str, max_pixels: int, fit: int | None, budget: PixelBudget | None,
            draft: int | None = None) -> Image.Image:
    img = _open(fp)
    w, h = img.size
    if w <= 0 or h <= 0:
        raise BadImage(f"{label}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise TooManyPixels(
            f"{label}: image too large ({w}x{h} = {w * h:,} pixels, limit {max_pixels:,}); "
            "possible decompression bomb"
        )
    side = draft or fit
    if side and img.format == "JPEG":
        img.draft("RGB", (side, side))  # DCT scaling: decodes at 1/2, 1/4 or 1/8 size, never below side
    decoded = img.size[0] * img.size[1]  # after draft: a JPEG decodes at the reduced size
    if budget is not None:
        budget.acquire(decoded)
    try:
        img.load()
        small = _reduce(img, fit) if fit else img
        upright: Image.Image = ImageOps.exif_transpose(small) or small
        rgb = to_rgb(upright)
        if rgb is not img:
            img.close()  # free the full-size pixels now, before another decode may take the budget
    finally:
        if budget is not None:
            budget.release(decoded)
    # The size of the picture as stored (upright), whatever it was reduced to: metadata reports it.
    turned = upright.size != small.size
    rgb.info[SOURCE_SIZE] = (h, w) if turned else (w, h)
    return rgb


def _open(fp: IO[bytes]) -> ImageFile.ImageFile:
    """``Image.open`` without its process-wide ``Image.MAX_IMAGE_PIXELS`` check.

    Pillow's bomb guard is one global; switching it off around ``Image.open`` from decoding threads
    raced and could leave it off for the whole process. So we identify the format with Pillow's own
    plugin table, as ``Image.open`` does, and let the caller apply its own per-image pixel limit.
    """
    Image.preinit()  # registers the common formats first, so they are tried first, as Image.open does
    Image.init()
    prefix = fp.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            # a format's check may itself fail on a short prefix (BMP/DIB read 4 bytes of a 1-byte file)
            accepted = accept(prefix) if accept is not None else True
            if isinstance(accepted, str) or not accepted:  # a str is Pillow's "maybe" warning
                continue
            fp.seek(0)
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # not this format after all; Image.open tries the next one too
    raise UnidentifiedImageError("cannot identify image file")


def _reduce(img: Image.Image, fit: int) -> Image.Image:
    """Shrink by the largest integer factor that keeps the shorter side at least ``fit``."""
    factor = min(img.size) // fit
    if factor < 2:
        return img
    if img.mode not in _REDUCIBLE_MODES:
        img = to_rgb(img)
    return img.reduce(factor)


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
