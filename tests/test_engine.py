"""The Python API end to end with the test encoder: index, search every way, filters, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipseek
from clipseek.errors import (
    BadFilter,
    BadImage,
    BadVector,
    ClipseekError,
    CollectionNotFound,
    EncoderMismatch,
    RecordNotFound,
)

STORE = "memory"


@pytest.fixture
def col(engine, photo_dir):  # type: ignore[no-untyped-def]
    c = engine.create("t", model="test-colors", store=STORE)
    rep = c.index(photo_dir)
    assert rep.added == 5 and rep.failed == []
    return c


def names(res) -> list[str]:  # type: ignore[no-untyped-def]
    return [Path(h.id).name for h in res.hits]


def test_index_folder_skips_hidden_and_non_images(col, photo_dir) -> None:  # type: ignore[no-untyped-def]
    assert col.count() == 5
    ids = sorted(Path(i).name for i in col.store.ids())
    assert ids == ["blue.webp", "green.png", "red.jpg", "white.gif", "yellow.bmp"]
    meta = col.get(str(photo_dir / "sub" / "yellow.bmp"))["metadata"]
    assert meta["folder"] == "sub" and meta["file_name"] == "yellow.bmp" and meta["width"] == 64
    assert "_fingerprint" not in meta


def test_text_search_ranks_matching_colour_first(col) -> None:  # type: ignore[no-untyped-def]
    assert names(col.search("red", top=2))[0] == "red.jpg"
    assert names(col.search("蓝色", top=1)) == ["blue.webp"]


def test_scores_are_calibrated_and_raw_cosine_kept(col) -> None:  # type: ignore[no-untyped-def]
    res = col.search("green", top=5)
    cal = col.encoder.calibration["text"]
    for h in res.hits:
        assert h.score == pytest.approx(cal.score(h.cosine))
    cos = [h.cosine for h in res.hits]
    assert cos == sorted(cos, reverse=True)
    d = res.to_dict()
    assert set(d["hits"][0]) == {"id", "score", "cosine", "metadata"}
    assert d["took_ms"] >= d["timing"]["encode_ms"] + d["timing"]["search_ms"] - 1e-3
    assert d["timing"]["search_ms"] > 0


def test_threshold_is_on_the_calibrated_score(col) -> None:  # type: ignore[no-untyped-def]
    all_hits = col.search("red", top=5).hits
    strict = col.search("red", top=5, threshold=0.5).hits
    assert [h.id for h in strict] == [h.id for h in all_hits if h.score >= 0.5]
    assert 1 <= len(strict) < len(all_hits)


def test_image_query_from_path_bytes_and_like(col, photo_dir) -> None:  # type: ignore[no-untyped-def]
    red = photo_dir / "red.jpg"
    assert names(col.search(image=red, top=1)) == ["red.jpg"]
    buf = io.BytesIO()
    Image.open(red).transpose(Image.FLIP_LEFT_RIGHT).save(buf, "PNG")
    assert names(col.search(image=buf.getvalue(), top=1)) == ["red.jpg"]
    like = col.search(like=str(red), top=10)
    assert "red.jpg" not in names(like) and len(like.hits) == 4
    assert like.query == {"kind": "like", "like": str(red)}


def test_vector_query_and_wrong_dimension(col) -> None:  # type: ignore[no-untyped-def]
    v = col.encoder.embed_text("yellow")
    assert names(col.search(vector=v.tolist(), top=1)) == ["yellow.bmp"]
    with pytest.raises(BadVector, match="wrong vector dimension: got 3, the collection holds 48-d"):
        col.search(vector=[1.0, 0.0, 0.0])


def test_filters(col) -> None:  # type: ignore[no-untyped-def]
    assert sorted(names(col.search("red", where={"folder": "sub"}))) == ["white.gif", "yellow.bmp"]
    assert sorted(names(col.search("red", where=["folder="]))) == ["blue.webp", "green.png", "red.jpg"]
    with pytest.raises(BadFilter, match="cannot parse filter 'width>='"):
        col.search("red", where=["width>="])
    assert names(col.search("red", where=["file_name in green.png,blue.webp"], top=1)) == ["green.png"]
    assert col.count(where=["width>=64"]) == 5
    assert col.count(where={"width": {"gt": 64}}) == 0
    with pytest.raises(BadFilter, match="unknown filter field 'colour'"):
        col.search("red", where=["colour=red"])
    with pytest.raises(BadFilter, match="cannot parse filter"):
        col.search("red", where=["=red"])
    with pytest.raises(BadFilter, match="needs a number or an ISO-8601 time"):
        col.search("red", where={"width": {"gt": "wide"}})


def test_reindex_adds_only_new_or_changed(col, photo_dir, make_image) -> None:  # type: ignore[no-untyped-def]
    rep = col.index(photo_dir)
    assert (rep.added, rep.updated, rep.unchanged) == (0, 0, 5)
    make_image(photo_dir / "new.png", (10, 10, 200))
    make_image(photo_dir / "red.jpg", (10, 200, 10), size=(80, 40))  # changed content and size
    rep = col.index(photo_dir)
    assert (rep.added, rep.updated, rep.unchanged) == (1, 1, 4)
    assert col.count() == 6
    assert col.get(str(photo_dir / "red.jpg"))["metadata"]["width"] == 80


def test_bad_files_are_reported_and_the_rest_indexed(engine, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "mixed"
    make_image(d / "ok1.png", (200, 0, 0))
    make_image(d / "ok2.jpg", (0, 200, 0))
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.png").write_text("hello, not a png")
    good = (d / "ok2.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    c = engine.create("mixed", model="test-colors", store=STORE)
    rep = c.index(d)
    failed = {Path(f.id).name: f.message for f in rep.failed}
    assert rep.added == 2 and c.count() == 2
    assert {Path(f.id).name: f.reason for f in rep.failed} == {
        "empty.jpg": "empty_file", "text.png": "not_an_image", "truncated.jpg": "corrupt_image"
    }
    assert failed["empty.jpg"] == "empty file"
    assert failed["text.png"] == "not an image (unrecognised format)"
    assert failed["truncated.jpg"].startswith("corrupt or truncated image")


def test_decompression_bomb_is_refused(tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    from clipseek.images import load_image

    p = make_image(tmp_path / "big.png", size=(300, 200))
    with pytest.raises(BadImage, match=r"image too large \(300x200 = 60,000 pixels, limit 50,000\)"):
        load_image(p, max_pixels=50_000)
    assert load_image(p).size == (300, 200)


def test_unknown_collection_and_mismatched_model(engine, col) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CollectionNotFound, match="no collection 'nope'"):
        engine.open("nope")
    with pytest.raises(EncoderMismatch, match="built with model 'test-colors', not 'offline'"):
        engine.collection("t", model="offline")


def test_encoder_version_change_is_refused(engine, col, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from clipseek.plugins import get_registry

    ColorEncoder = get_registry().encoder_class("test-colors")
    engine._open.clear()
    engine._encoders.clear()
    monkeypatch.setattr(ColorEncoder, "version", "2")
    with pytest.raises(EncoderMismatch, match="version 1.*version 2"):
        engine.open("t").search("red")


def test_like_unknown_id(col) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordNotFound, match="no record 'nope' in collection 't'"):
        col.search(like="nope")


def test_exactly_one_query(col) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClipseekError, match="exactly one query"):
        col.search("red", like="x")
    with pytest.raises(ClipseekError, match="exactly one query"):
        col.search()


def test_delete_by_id_and_filter_and_drop(engine, col, photo_dir) -> None:  # type: ignore[no-untyped-def]
    assert col.delete([str(photo_dir / "red.jpg"), "unknown"]) == 1
    assert col.delete(where={"folder": "sub"}) == 2
    assert sorted(Path(i).name for i in col.store.ids()) == ["blue.webp", "green.png"]
    engine.drop("t")
    assert engine.names() == []
    with pytest.raises(CollectionNotFound):
        engine.open("t")


def test_url_query_errors(col) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadImage, match="cannot download"):
        col.search(image="http://127.0.0.1:9/nothing.jpg", allow_private_urls=True)
    with pytest.raises(BadImage, match=r"refused: 127\.0\.0\.1 resolves to 127\.0\.0\.1, a local or private address"):
        col.search(image="http://127.0.0.1:9/nothing.jpg")


def test_public_api_is_exported() -> None:
    assert sorted(clipseek.__all__) == clipseek.__all__
    for name in clipseek.__all__:
        assert getattr(clipseek, name) is not None


def test_vectors_are_unit_float32(col, photo_dir) -> None:  # type: ignore[no-untyped-def]
    rec = col.store.get([str(photo_dir / "green.png")])[0]
    assert rec.vector.dtype == np.float32
    assert np.linalg.norm(rec.vector) == pytest.approx(1.0, abs=1e-6)


def test_index_with_zero_shot_labels_and_relabel(engine, photo_dir) -> None:  # type: ignore[no-untyped-def]
    c = engine.create("lab", model="test-colors", store=STORE)
    c.index(photo_dir, labels="red,green,blue")
    meta = c.get(str(photo_dir / "green.png"))["metadata"]
    assert meta["labels"] == ["green"] and meta["label_probs"]["green"] > 0.5
    red = {Path(h.id).name for h in c.search("red", top=10, where={"labels": "red"}).hits}
    assert "red.jpg" in red and not red & {"green.png", "blue.webp"}
    # a re-run with other labels relabels unchanged items from their stored vectors (no re-encoding)
    rep = c.index(photo_dir, labels="yellow,blue", label_top=2)
    assert rep.unchanged == 5 and rep.embedded == 0
    meta = c.get(str(photo_dir / "sub" / "yellow.bmp"))["metadata"]
    assert meta["labels"][0] == "yellow" and set(meta["label_probs"]) == {"yellow", "blue"}
    with pytest.raises(ClipseekError, match="at least two candidate labels"):
        c.index(photo_dir, labels="red")


def test_interrupted_index_resumes_without_duplicates(engine, tmp_path, make_image, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from clipseek import ingest as ingest_mod

    d = tmp_path / "many"
    for i in range(10):
        make_image(d / f"{i:02d}.png", (i * 20, 100, 200 - i * 15))
    c = engine.create("resume", model="test-colors", store="local")
    enc = c.encoder
    calls = {"n": 0}
    real = enc._embed_images

    def dying(images):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third batch
        return real(images)

    monkeypatch.setattr(enc, "_embed_images", dying)
    monkeypatch.setattr(enc, "batch_size", 2)
    original = ingest_mod.ingest
    monkeypatch.setattr("clipseek.engine.ingest", lambda *a, **k: original(*a, **{**k, "commit_every": 100}))
    with pytest.raises(KeyboardInterrupt):
        c.index(d)
    assert c.count() == 4  # the two batches encoded before Ctrl-C are kept, nothing partial
    monkeypatch.setattr(enc, "_embed_images", real)
    rep = c.index(d)
    assert (rep.added, rep.unchanged) == (6, 4)
    assert c.count() == 10 and len(set(c.store.ids())) == 10


def test_unreadable_paths_give_clear_errors(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from clipseek.images import load_image

    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(BadImage, match=r"folder\.jpg: is a directory"):
        load_image(tmp_path / "folder.jpg")
    with pytest.raises(BadImage, match=r"gone\.png: no such file"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(BadImage, match="<bytes>: empty data"):
        load_image(b"")
    c = engine.create("paths", model="test-colors", store=STORE)
    rep = c.index(clipseek.FileListSource([tmp_path / "folder.jpg", tmp_path / "gone.png"]))
    assert rep.added == 0 and c.count() == 0
    reasons = {Path(f.id).name: (f.message, f.reason) for f in rep.failed}
    assert reasons == {"folder.jpg": ("is a directory", "not_a_file"), "gone.png": ("no such file", "missing_file")}


def test_image_refs_from_python_resume_and_filter(engine, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    p1 = make_image(tmp_path / "k12" / "1.jpg", (200, 20, 20))
    p2 = make_image(tmp_path / "k13" / "2.jpg", (20, 20, 200))
    refs = [
        clipseek.ImageRef(id="k12-1", path=p1, metadata={"camera": "k12", "taken_at": "2024-05-01T08:03:11"}),
        clipseek.ImageRef(id="k13-2", path=p2, metadata={"camera": "k13", "taken_at": "2024-05-02T09:00:00Z"}),
    ]
    c = engine.create("refs", model="test-colors", store="local")
    assert c.index(refs).added == 2
    assert (c.index(refs).unchanged, c.index(refs).embedded) == (2, 0)  # fingerprinted from the files
    res = c.search("red", where={"camera": {"in": ["k12", "k13"]}, "taken_at": {"gte": "2024-05-02"}})
    assert [h.id for h in res.hits] == ["k13-2"] and res.hits[0].metadata["camera"] == "k13"


def test_like_and_vector_queries_need_no_model(tmp_path, photo_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The calibration is kept in collection.json, so queries from stored or given vectors never
    build the encoder; a collection made before that falls back to the encoder's calibration."""
    import json

    with clipseek.Engine(tmp_path / "d") as eng:
        c = eng.create("nomodel", model="test-colors", store="local")
        c.index(photo_dir)
        v = c.encoder.embed_text("yellow")
    cfg_path = tmp_path / "d" / "collections" / "nomodel" / "collection.json"
    assert json.loads(cfg_path.read_text())["calibration"] == {
        "text": {"center": 0.9, "scale": 0.05},
        "image": {"center": 0.95, "scale": 0.02},
    }

    def no_model(self, name):  # type: ignore[no-untyped-def]
        raise AssertionError("the encoder was built")

    with monkeypatch.context() as m:
        m.setattr(clipseek.Engine, "encoder", no_model)
        with clipseek.Engine(tmp_path / "d") as eng:
            c = eng.open("nomodel", read_only=True)
            like = c.search(like=str(photo_dir / "red.jpg"), top=1)
            by_vec = c.search(vector=v, top=1)
    assert names(by_vec) == ["yellow.bmp"] and by_vec.hits[0].score == pytest.approx(
        1 / (1 + np.exp(-(by_vec.hits[0].cosine - 0.95) / 0.02))
    )
    assert len(like.hits) == 1 and like.hits[0].score == pytest.approx(1 / (1 + np.exp(-(like.hits[0].cosine - 0.95) / 0.02)))
    # an old collection.json without a calibration: the encoder's is used
    cfg = json.loads(cfg_path.read_text())
    del cfg["calibration"]
    cfg_path.write_text(json.dumps(cfg))
    with clipseek.Engine(tmp_path / "d") as eng:
        old = eng.open("nomodel", read_only=True).search(vector=v, top=1)
    assert names(old) == ["yellow.bmp"] and old.hits[0].score == pytest.approx(by_vec.hits[0].score)


def test_bookkeeping_fields_are_hidden_from_filters(col) -> None:  # type: ignore[no-untyped-def]
    assert "_fingerprint" not in col.info()["fields"]
    for call in (lambda: col.search("red", where=["_fingerprint=1"]), lambda: col.count(where={"_fingerprint": "x"}),
                 lambda: col.delete(where=["_fingerprint=1"])):
        with pytest.raises(BadFilter, match=r"^unknown filter field '_fingerprint'; this collection's fields: file_name, "):
            call()
    assert col.count() == 5


def test_delete_accepts_the_relative_path_that_like_accepts(col, photo_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(photo_dir)
    assert names(col.search(like="sub/yellow.bmp", top=1)) != ["yellow.bmp"]  # like finds it (and excludes it)
    assert col.delete(["sub/yellow.bmp", "red.jpg", "missing.png"]) == 2
    assert sorted(Path(i).name for i in col.store.ids()) == ["blue.webp", "green.png", "white.gif"]


def test_a_query_vector_must_be_one_row(col) -> None:  # type: ignore[no-untyped-def]
    v = col.encoder.embed_texts(["yellow", "red"])
    with pytest.raises(BadVector, match=r"^give one query vector, got 2 rows \(shape \(2, 48\)\)$"):
        col.search(vector=v)
    assert names(col.search(vector=v[:1], top=1)) == ["yellow.bmp"]  # a (1, dim) array is one vector
