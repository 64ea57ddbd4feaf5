"""Render search results as a picture grid with captions and scores (as the seed notebook plots them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .errors import ClipseekError
from .images import load_image
from .types import Hit

# Fonts that can draw Chinese captions, looked for in this order; Pillow's own font otherwise.
_CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    env = os.environ.get("CLIPSEEK_FONT")
    for p in ([env] if env else []) + list(_CJK_FONTS):
        if p and Path(p).is_file():
            try:
                return ImageFont.truetype(p, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def _can_draw(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> bool:
    """Pillow's built-in font has no CJK glyphs; only a CJK font (or the user's) can draw them."""
    if all(ord(c) < 128 for c in text):
        return True
    path = str(getattr(font, "path", ""))
    return bool(path) and (path == os.environ.get("CLIPSEEK_FONT") or path in _CJK_FONTS)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:  # type: ignore[no-untyped-def]
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def caption_of(hit: Hit) -> str:
    m = hit.metadata
    for key in ("caption", "title", "label", "file_name"):
        if m.get(key):
            return str(m[key])
    return Path(hit.id).name or hit.id


def render_grid(
    hits: Sequence[Hit],
    out: str | Path,
    *,
    title: str = "",
    query_image: Image.Image | None = None,
    columns: int = 5,
    thumb: int = 200,
) -> Path:
    """Write a PNG/JPEG grid: one tile per hit with its rank, calibrated score, raw cosine and caption."""
    tiles: list[tuple[Image.Image | None, list[str]]] = []
    if query_image is not None:
        tiles.append((query_image, ["query", ""]))
    for rank, h in enumerate(hits, 1):
        img = None
        path = h.metadata.get("path")
        if path:
            try:
                img = load_image(path)
            except ClipseekError:
                img = None
        tiles.append((img, [f"#{rank}  score {h.score:.2f}  cos {h.cosine:.3f}", caption_of(h)]))
    if not tiles:
        tiles.append((None, ["no results", ""]))
    cols = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    font = _font(14)
    title_font = _font(18)
    pad, cap_h = 8, 40
    title_h = 34 if title else 0
    W = cols * (thumb + pad) + pad
    H = title_h + rows * (thumb + cap_h + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        t = title if _can_draw(title_font, title) else title.encode("ascii", "replace").decode()
        draw.text((pad, 8), _fit(draw, t, title_font, W - 2 * pad), fill="black", font=title_font)
    for k, (img, lines) in enumerate(tiles):
        r, c = divmod(k, cols)
        x = pad + c * (thumb + pad)
        y = title_h + pad + r * (thumb + cap_h + pad)
        if img is not None:
            im = img.copy()
            im.thumbnail((thumb, thumb))
            canvas.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
        else:
            draw.rectangle([x, y, x + thumb, y + thumb], outline="grey")
            draw.text((x + 8, y + thumb // 2), "(image unavailable)", fill="grey", font=font)
        for i, line in enumerate(lines):
            line = line if _can_draw(font, line) else line.encode("ascii", "replace").decode()
            draw.text((x, y + thumb + 3 + i * 18), _fit(draw, line, font, thumb), fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
