"""The ingest pipeline: one "unchanged" rule, metadata-only relabelling, memory bounded by pixels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import clipseek


def test_image_refs_without_fingerprint_are_relabelled_when_unchanged(engine, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    """Python API refs carry no fingerprint; the ingest fingerprints them from the file, and the
    same rule that skips them as unchanged also relabels them."""
    refs = [
        clipseek.ImageRef(id="r", path=make_image(tmp_path / "r.png", (220, 30, 30))),
        clipseek.ImageRef(id="b", path=make_image(tmp_path / "b.png", (30, 40, 220))),
    ]
    c = engine.create("refs", model="test-colors", store="memory")
    assert c.index(refs, labels="red,blue").added == 2
    assert c.get("r")["metadata"]["labels"] == ["red"]
    rep = c.index(refs, labels="green,yellow")
    assert (rep.unchanged, rep.embedded) == (2, 0)
    assert c.get("r")["metadata"]["labels"] == ["yellow"] and c.get("b")["metadata"]["labels"] == ["green"]


def test_relabelling_updates_metadata_only(engine, photo_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    c = engine.create("lab", model="test-colors", store="local")
    c.index(photo_dir, labels="red,green,blue")
    upserted: list[str] = []
    updated: list[dict] = []
    inside_update = []  # the store's own update_metadata may use upsert; the ingest must not
    real_upsert, real_update = c.store.upsert, c.store.update_metadata

    def upsert(recs):  # type: ignore[no-untyped-def]
        if not inside_update:
            upserted.extend(r.id for r in recs)
        real_upsert(recs)

    def update_metadata(u):  # type: ignore[no-untyped-def]
        updated.append(dict(u))
        inside_update.append(1)
        try:
            return real_update(u)
        finally:
            inside_update.pop()

    monkeypatch.setattr(c.store, "upsert", upsert)
    monkeypatch.setattr(c.store, "update_metadata", update_metadata)
    rep = c.index(photo_dir, labels="yellow,blue")
    assert (rep.unchanged, rep.embedded) == (5, 0)
    assert upserted == []  # no record (vector) is rewritten
    assert len(updated) == 1 and sorted(Path(i).name for i in updated[0]) == [
        "blue.webp", "green.png", "red.jpg", "white.gif", "yellow.bmp"
    ]
    assert updated[0][str(photo_dir / "sub" / "yellow.bmp")]["labels"] == ["yellow"]
    assert c.get(str(photo_dir / "blue.webp"))["metadata"]["labels"] == ["blue"]


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from clipseek.encoders.base import Encoder
    from clipseek.images import load_image
    from clipseek.ingest import ingest
    from clipseek.sources import FolderSource
    from clipseek.stores.memory import MemoryStore

    class MeanColour(Encoder):
        name, model_id, dim = "mean", "tests/mean", 3
        def _embed_images(self, images):
            return np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) + 1 for im in images])
        def _embed_texts(self, texts):
            return np.ones((len(texts), 3), dtype=np.float32)

    load_image(sys.argv[2])  # warm up Pillow's decoders before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = MemoryStore(None, 3)
    rep = ingest(FolderSource(sys.argv[1]), MeanColour(), store, workers=4, batch_size=8)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sizes = sorted({(r.metadata["width"], r.metadata["height"]) for r in store.get(list(store.ids()))})
    print(json.dumps({"added": rep.added, "failed": rep.failed, "grew_mb": (peak - base) / 1024, "sizes": sizes}))
    """
)


def test_huge_pngs_with_several_workers_are_all_indexed_in_bounded_memory(tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    """Four valid 225-megapixel PNGs (15000x15000 greyscale, 225 MB each when decoded) and four
    small photos, with four decoding threads: every file is indexed (none refused as a bomb), and
    the process grows by less than three decoded huge images (it grew by 6.4 GB when they were kept
    at full size), because each is reduced right after decoding and full-size decodes share a pixel
    budget. (One decode alone grows it by 220 MB; glibc's per-thread arenas keep some freed memory.)"""
    d = tmp_path / "huge"
    d.mkdir()
    Image.new("L", (15000, 15000), 90).save(d / "h0.png", compress_level=1)
    for i in range(1, 4):
        shutil.copy(d / "h0.png", d / f"h{i}.png")
    for i in range(4):
        make_image(d / f"s{i}.png", (40 * i, 90, 200))
    small = make_image(tmp_path / "warm.png")
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(d), str(small)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["failed"] == [] and res["added"] == 8
    assert res["sizes"] == [[64, 48], [15000, 15000]]  # metadata keeps the file's size, not the reduced one
    assert res["grew_mb"] < 3 * 225, res


def test_commit_window_counts_commits_when_due_and_never_retries_a_failed_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from clipseek.downloads import DownloadStage
    from clipseek.ingest import CommitWindow, IngestReport
    from clipseek.types import Record

    class Store:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []
            self.fail = False

        def upsert(self, recs):  # type: ignore[no-untyped-def]
            self.calls.append([r.id for r in recs])
            if self.fail:
                raise OSError("disk full")

    store, report = Store(), IngestReport()
    win = CommitWindow(store, report, DownloadStage(tmp_path / "dl"), every=3, seconds=3600)  # type: ignore[arg-type]
    v = np.ones(4, np.float32) / 2
    win.add(Record("a", v), True)
    win.add(Record("b", v), False)
    assert not win.due()
    win.add(Record("c", v), True)
    assert win.due()
    assert [r.id for r in win.commit()] == ["a", "b", "c"]
    assert (store.calls, report.added, report.updated, win.pending) == ([["a", "b", "c"]], 2, 1, [])
    assert win.commit() == [] and len(store.calls) == 1  # nothing pending: no write

    store.fail = True
    win.add(Record("d", v), True)
    with pytest.raises(OSError, match="disk full"):
        win.commit()
    assert win.failed and win.commit() == [] and len(store.calls) == 2  # not retried on the way out
    assert (report.added, report.updated) == (2, 1)
