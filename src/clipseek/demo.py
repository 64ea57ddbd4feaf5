"""`clipseek demo`: the main job end to end on photos that ship inside PyPI packages.

Index the sample photos, search them by English and Chinese text and by a photo (a cropped, flipped
copy of one of them), print ranked results with scores, and write picture grids.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

from PIL import ImageOps

from .engine import Engine
from .types import ImageRef

DEMO_COLLECTION = "demo"
TEXT_QUERIES = ["a cat", "一只猫", "a rocket on the launch pad", "火箭", "a cup of coffee", "一杯咖啡", "中国的寺庙", "an astronaut"]


def sample_refs() -> list[ImageRef]:
    from .samples import sample_photos

    refs = []
    for sid, path, caption in sample_photos():
        st = path.stat()
        refs.append(
            ImageRef(
                id=sid,
                path=path,
                metadata={"caption": caption, "path": str(path), "file_name": path.name},
                fingerprint=f"{st.st_size}:{st.st_mtime_ns}",
            )
        )
    return refs


def run_demo(
    engine: Engine, *, collection: str | None = None, out_dir: Path = Path("clipseek-demo"), echo: Callable[[str], None] = print
) -> None:
    from tqdm import tqdm

    from .grid import render_grid
    from .images import load_image

    name = collection or DEMO_COLLECTION
    col = engine.collection(name)
    refs = sample_refs()
    echo(f"Indexing {len(refs)} sample photos into collection {name!r} ({engine.data_dir}) with model {col.encoder_info.name!r}")
    with tqdm(total=len(refs), unit="img", desc="indexing") as bar:
        rep = col.index(refs, on_progress=bar.update)
    echo(rep.summary())
    out_dir.mkdir(parents=True, exist_ok=True)
    grids = []
    for k, q in enumerate(TEXT_QUERIES, 1):
        res = col.search(q, top=3)
        echo(f"\n{q!r}:")
        for i, h in enumerate(res.hits, 1):
            echo(f"  {i}. {h.id:<18} score {h.score:.2f}  cosine {h.cosine:.3f}  ({h.metadata.get('caption', '')})")
        grids.append(render_grid(res.hits, out_dir / f"text-{k}.png", title=q, columns=3))
    # Image query: a cropped, mirrored, re-compressed copy of the cat photo must find the original.
    cat = next(r for r in refs if r.id == "chelsea")
    assert cat.path is not None
    img = load_image(cat.path)
    width, height = img.size
    box = (width // 10, height // 10, width - width // 20, height - height // 20)
    edited = ImageOps.mirror(img.crop(box)).resize((width // 2, height // 2))
    buf = io.BytesIO()
    edited.save(buf, "JPEG", quality=60)
    res = col.search(image=buf.getvalue(), top=3)
    echo("\nimage query (a cropped, mirrored, re-compressed copy of 'chelsea'):")
    for i, h2 in enumerate(res.hits, 1):
        echo(f"  {i}. {h2.id:<18} score {h2.score:.2f}  cosine {h2.cosine:.3f}")
    grids.append(render_grid(res.hits, out_dir / "image.png", title="image query", query_image=edited, columns=4))
    echo(f"\nResult grids written to {out_dir}/ ({len(grids)} files). Try:")
    echo(f'  clipseek search "白色的猫" -c {name} --json')
    echo(f"  clipseek search --like chelsea -c {name} --grid similar.png")
