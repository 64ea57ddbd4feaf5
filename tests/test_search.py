"""Collection.search and its query handling, on the in-memory store with the test encoder.

Records get hand-made vectors, so every cosine is known in advance (q = e0, and a record
``c*e0 + sqrt(1-c^2)*e_k`` has cosine c); expected scores are the logistic written out here with
math.exp, never Calibration's own answer."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipseek import engine as engine_mod
from clipseek.encoders.base import Calibration
from clipseek.errors import BadFilter, BadImage, BadVector, ClipseekError, RecordNotFound
from clipseek.filters import Condition
from clipseek.types import Record

DIM = 48  # the test encoder's
E = np.eye(DIM, dtype=np.float32)
# cosine of each record with the query e0
COS = {"a": 1.0, "b": 0.97, "c": 0.95, "d": 0.93, "e": 0.5, "f": -1.0}
# the test encoder's calibrations (tests/conftest.py): text (0.9, 0.05), image (0.95, 0.02)


def image_score(c: float) -> float:
    return 1 / (1 + math.exp(-min(60.0, max(-60.0, (c - 0.95) / 0.02))))


def text_score(c: float) -> float:
    return 1 / (1 + math.exp(-(c - 0.9) / 0.05))


def red_text_vector() -> np.ndarray:
    """What the test encoder makes of 'red': a solid (220, 30, 30) image as 16 RGB cells, +0.05."""
    v = np.tile(np.array([220, 30, 30], dtype=np.float64) / 255 + 0.05, 16)
    return v / np.linalg.norm(v)


@pytest.fixture
def col(engine):  # type: ignore[no-untyped-def]
    c = engine.create("t", model="test-colors", store="memory")
    recs = []
    for k, (rid, cos) in enumerate(COS.items()):
        v = cos * E[0] + math.sqrt(max(0.0, 1 - cos * cos)) * E[k + 1]
        recs.append(Record(rid, v, {"camera": f"c{k % 2}", "_fingerprint": f"{k}:0", "i": k}))
    recs.append(Record("red", red_text_vector(), {"camera": "c9", "_fingerprint": "9:9", "i": 9}))
    c.store.upsert(recs)
    return c


def ids(res) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.id for h in res.hits]


def test_vector_query_scores_and_cosines(col) -> None:  # type: ignore[no-untyped-def]
    res = col.search(vector=E[0], top=10)
    assert ids(res) == ["a", "b", "c", "d", "e", "red", "f"]
    for h in res.hits:
        if h.id in COS:
            assert h.cosine == pytest.approx(COS[h.id], abs=1e-6)
            assert h.score == pytest.approx(image_score(COS[h.id]), rel=1e-4, abs=1e-30)
    assert res.hits[1].score == pytest.approx(0.7310585786300049, rel=1e-4)  # cosine 0.97
    assert res.hits[3].score == pytest.approx(0.2689414213699951, rel=1e-4)  # cosine 0.93
    assert res.query == {"kind": "vector"}
    assert res.collection == "t" and res.model == "test-colors"
    assert res.where == [] and res.threshold is None


def test_top_limits_the_hits(col) -> None:  # type: ignore[no-untyped-def]
    assert len(col.search(vector=E[0]).hits) == 7
    col.store.upsert([Record(f"z{k:02d}", E[20 + k], {"i": 100 + k}) for k in range(10)])
    assert len(col.search(vector=E[0]).hits) == 10  # the default top
    assert ids(col.search(vector=E[0], top=1)) == ["a"]
    assert ids(col.search(vector=E[0], top=3)) == ["a", "b", "c"]
    with pytest.raises(ClipseekError) as e:
        col.search(vector=E[0], top=0)
    assert str(e.value) == "top must be at least 1, got 0"


def test_threshold_is_a_calibrated_score(col) -> None:  # type: ignore[no-untyped-def]
    # threshold t keeps cosines >= 0.95 + 0.02 * ln(t / (1 - t))
    assert ids(col.search(vector=E[0], threshold=0.6)) == ["a", "b"]  # cosine >= 0.9581
    assert ids(col.search(vector=E[0], threshold=0.2)) == ["a", "b", "c", "d"]  # >= 0.9223
    assert ids(col.search(vector=E[0], threshold=0.9)) == ["a"]  # >= 0.9939
    assert ids(col.search(vector=E[0], threshold=0.0)) == ["a", "b", "c", "d", "e", "red", "f"]
    assert ids(col.search(vector=E[0], threshold=1.0)) == []
    assert col.search(vector=E[0], threshold=0.6).threshold == 0.6
    for bad in (-0.01, 1.01):
        with pytest.raises(ClipseekError) as e:
            col.search(vector=E[0], threshold=bad)
        assert str(e.value) == f"threshold is a calibrated score between 0 and 1, got {bad}"


def test_min_cosine_and_threshold_together_take_the_stricter(col) -> None:  # type: ignore[no-untyped-def]
    assert ids(col.search(vector=E[0], min_cosine=0.94)) == ["a", "b", "c"]
    assert ids(col.search(vector=E[0], min_cosine=0.94, threshold=0.6)) == ["a", "b"]
    assert ids(col.search(vector=E[0], min_cosine=0.98, threshold=0.2)) == ["a"]
    assert ids(col.search(vector=E[0], min_cosine=-1.0)) == ["a", "b", "c", "d", "e", "red", "f"]


def test_text_query_uses_the_text_calibration(col) -> None:  # type: ignore[no-untyped-def]
    res = col.search("red", top=1)
    assert ids(res) == ["red"] and res.query == {"kind": "text", "text": "red"}
    assert res.hits[0].cosine == pytest.approx(1.0, abs=1e-6)
    assert res.hits[0].score == pytest.approx(text_score(1.0), rel=1e-5)  # 0.8808, not 0.9241 (image)
    assert res.hits[0].score == pytest.approx(0.8807970779778823, rel=1e-5)
    # threshold 0.5 on text is cosine >= 0.9: only the red record
    assert ids(col.search("red", threshold=0.5)) == ["red"]


def test_a_kind_without_its_own_calibration_uses_the_image_one(col, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # the collection's own record (collection.json) carries the calibration per query kind
    monkeypatch.setitem(col.config, "calibration", {"image": {"center": 0.5, "scale": 0.25}})
    assert col.calibration("text") == Calibration(0.5, 0.25)
    hit = col.search("red", top=1).hits[0]
    assert hit.score == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-5)


def test_like_excludes_the_record_itself(col) -> None:  # type: ignore[no-untyped-def]
    res = col.search(like="a", top=3)
    assert ids(res) == ["b", "c", "d"] and res.query == {"kind": "like", "like": "a"}
    assert res.hits[0].score == pytest.approx(image_score(0.97), rel=1e-4)
    with pytest.raises(RecordNotFound) as e:
        col.search(like="zz")
    assert str(e.value) == "no record 'zz' in collection 't'"


def test_like_accepts_a_path_to_an_indexed_file(col, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = (tmp_path / "pic.png").resolve()  # folder ids are resolved absolute paths
    f.write_bytes(b"")
    (tmp_path / "sub").mkdir()
    col.store.upsert([Record(str(f), E[5], {"camera": "c0", "i": 20})])  # e's orthogonal part
    res = col.search(like=str(tmp_path / "sub" / ".." / "pic.png"), top=2)
    assert res.query == {"kind": "like", "like": str(f)}
    assert ids(res) == ["e", "red"]  # the file's own record is excluded
    with pytest.raises(RecordNotFound) as e:
        col.search(like=str(tmp_path / "other.png"))
    assert str(e.value) == f"no record {str(tmp_path / 'other.png')!r} in collection 't'"


def test_hits_carry_public_metadata(col) -> None:  # type: ignore[no-untyped-def]
    res = col.search(vector=E[0], top=2)
    assert [h.metadata for h in res.hits] == [{"camera": "c0", "i": 0}, {"camera": "c1", "i": 1}]
    assert col.store.get(["a"])[0].metadata["_fingerprint"] == "0:0"  # kept in the store


def test_where_filters_the_search(col) -> None:  # type: ignore[no-untyped-def]
    res = col.search(vector=E[0], where={"camera": "c1"})
    assert ids(res) == ["b", "d", "f"]
    assert res.where == [Condition("camera", "eq", "c1")]
    assert ids(col.search(vector=E[0], where=["camera in c9,'c0'", "i<4"])) == ["a", "c"]
    assert ids(col.search(vector=E[0], where=["camera=c1"], threshold=0.2)) == ["b", "d"]


def test_bad_filters_fail_before_the_query_is_encoded(col) -> None:  # type: ignore[no-untyped-def]
    # an empty text would be refused by the encoding step: the filter error must come first
    with pytest.raises(BadFilter) as e:
        col.search("", where={"camra": "c1"})
    assert str(e.value) == "unknown filter field 'camra'; this collection's fields: camera, i"
    with pytest.raises(BadFilter) as e:
        col.search("", where=["i=>3"])
    assert str(e.value).startswith("cannot parse filter 'i=>3': '=>' is not an operator; write i>=3")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"text": "red", "vector": E[0]}, {"like": "a", "image": b"x"}, {"text": "red", "like": "a"}],
)
def test_exactly_one_query(col, kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClipseekError) as e:
        col.search(**kwargs)
    assert str(e.value) == "give exactly one query: a text, an image, an existing id (like) or a vector"


def test_empty_text_query(col) -> None:  # type: ignore[no-untyped-def]
    for text in ("", "  \t"):
        with pytest.raises(ClipseekError) as e:
            col.search(text)
        assert str(e.value) == "empty text query"


def _red_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (220, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_query_images_are_named_in_the_error(col, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadImage) as e:
        col.search(image=b"not an image")
    assert str(e.value) == "<uploaded image>: not an image (unrecognised format)"
    monkeypatch.setattr(engine_mod, "fetch_url", lambda url, allow_private=False, proxy=None: b"garbage")
    with pytest.raises(BadImage) as e:
        col.search(image="http://127.0.0.1:9/x.jpg")
    assert str(e.value) == "http://127.0.0.1:9/x.jpg: not an image (unrecognised format)"


def test_image_queries_from_bytes_path_and_url(col, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    res = col.search(image=_red_png(), top=1)
    assert ids(res) == ["red"] and res.query == {"kind": "image", "image": "<bytes>"}
    assert res.hits[0].score == pytest.approx(image_score(res.hits[0].cosine), rel=1e-5)
    assert res.hits[0].cosine == pytest.approx(1.0, abs=1e-6)
    p = tmp_path / "q.png"
    p.write_bytes(_red_png())
    for given in (p, str(p)):
        res = col.search(image=given, top=1)
        assert ids(res) == ["red"] and res.query == {"kind": "image", "image": str(p)}
    asked: list[str] = []

    def fake_fetch(url: str, allow_private: bool = False, proxy: str | None = None) -> bytes:
        asked.append(url)
        return _red_png()

    monkeypatch.setattr(engine_mod, "fetch_url", fake_fetch)
    for url in ("http://127.0.0.1:9/q.png", "https://127.0.0.1:9/q.png"):
        res = col.search(image=url, top=1)
        assert ids(res) == ["red"] and res.query == {"kind": "image", "image": url}
    assert asked == ["http://127.0.0.1:9/q.png", "https://127.0.0.1:9/q.png"]


def test_vector_queries_are_checked(col) -> None:  # type: ignore[no-untyped-def]
    assert ids(col.search(vector=(2 * E[2]).tolist(), top=1)) == ["b"]
    with pytest.raises(BadVector) as e:
        col.search(vector=[1.0, 0.0])
    assert str(e.value) == "wrong vector dimension: got 2, the collection holds 48-d vectors"


def test_timings_and_to_dict(col, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = iter([10.0, 10.0123456, 10.0501234, 10.1234567])  # start, query encoded, store searched, done

    monkeypatch.setattr(engine_mod.time, "perf_counter", lambda: next(clock))
    res = col.search(vector=E[0], top=2, where={"camera": "c0"}, threshold=0.2)
    monkeypatch.undo()
    assert res.encode_ms == pytest.approx(12.3456, abs=1e-9)
    assert res.search_ms == pytest.approx(37.7778, abs=1e-9)
    assert res.took_ms == pytest.approx(123.4567, abs=1e-9)
    d = res.to_dict()
    assert d == {
        "collection": "t",
        "model": "test-colors",
        "query": {"kind": "vector"},
        "where": [{"field": "camera", "op": "eq", "value": "c0"}],
        "threshold": 0.2,
        "took_ms": 123.457,  # rounded to the microsecond
        "timing": {"encode_ms": 12.346, "search_ms": 37.778},
        "hits": [
            {"id": "a", "score": round(image_score(1.0), 6), "cosine": 1.0, "metadata": {"camera": "c0", "i": 0}},
            {"id": "c", "score": 0.5, "cosine": 0.95, "metadata": {"camera": "c0", "i": 2}},
        ],
    }
    assert json.loads(res.to_json()) == d
    assert res.to_json(indent=None) == json.dumps(d, ensure_ascii=False)
    assert res.to_json().startswith('{\n  "collection": "t",')


def test_to_json_keeps_non_ascii(col) -> None:  # type: ignore[no-untyped-def]
    res = col.search("红色", top=1)
    assert ids(res) == ["red"]
    assert '"text": "红色"' in res.to_json()


def test_round_trip_through_a_path_object(col, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # an id that is not a file path and not a record: the error names the id as given
    with pytest.raises(RecordNotFound) as e:
        col.search(like="~/no-such-clipseek-file.png")
    assert str(e.value) == "no record '~/no-such-clipseek-file.png' in collection 't'"


def test_query_vector_gives_vector_description_kind_and_exclusion(col, tmp_path) -> None:  # type: ignore[no-untyped-def]
    q = col.query_vector(vector=[0.0, 3.0] + [0.0] * (DIM - 2))
    vec, desc, kind, exclude = q.vector, q.description, q.kind, q.exclude
    np.testing.assert_array_equal(vec, E[1])
    assert vec.dtype == np.float32 and (desc, kind, exclude) == ({"kind": "vector"}, "image", None)
    q = col.query_vector(like="b")
    vec, desc, kind, exclude = q.vector, q.description, q.kind, q.exclude
    assert (desc, kind, exclude) == ({"kind": "like", "like": "b"}, "image", "b")
    np.testing.assert_allclose(vec, col.store.get(["b"])[0].vector)
    q = col.query_vector(image=_red_png())
    vec, desc, kind, exclude = q.vector, q.description, q.kind, q.exclude
    assert (desc, kind, exclude) == ({"kind": "image", "image": "<bytes>"}, "image", None)
    np.testing.assert_allclose(vec, red_text_vector(), atol=1e-6)
    q = col.query_vector("red")
    vec, desc, kind, exclude = q.vector, q.description, q.kind, q.exclude
    assert (desc, kind, exclude) == ({"kind": "text", "text": "red"}, "text", None)
    np.testing.assert_allclose(vec, red_text_vector(), atol=1e-6)
    with pytest.raises(BadVector) as e:
        col.query_vector(vector=[1.0, 0.0])
    assert str(e.value) == "wrong vector dimension: got 2, the collection holds 48-d vectors"
