"""Vector-only collections (a dimension, no model) and Collection.add_vectors: what the REST API's
vector records and the Pinecone-compatible indexes are built on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipseek import Engine
from clipseek.errors import BadVector, ClipseekError, VectorOnly


@pytest.fixture()
def engine(tmp_path):
    with Engine(tmp_path) as e:
        yield e


def test_vector_only_collection_records_its_dimension_and_no_model(engine, tmp_path):
    col = engine.create("v", dim=3)
    assert col.vector_only
    cfg = json.loads((tmp_path / "collections" / "v" / "collection.json").read_text())
    assert cfg["encoder"] == {"name": "vectors", "model_id": "", "dim": 3, "version": "1"}
    assert cfg["calibration"] is None
    with pytest.raises(VectorOnly, match="holds vectors only"):
        col.search("a red car")
    with pytest.raises(VectorOnly):
        col.index([])


def test_add_vectors_normalises_and_search_scores_are_cosines(engine):
    col = engine.create("v", dim=3)
    n = col.add_vectors(["a", "b", "c"], [[2, 0, 0], [1, 1, 0], [0, 0, 5]], [{"camera": "k1"}, None, {"n": 3}])
    assert n == 3
    assert np.allclose(col.store.get(["a"])[0].vector, [1, 0, 0])
    res = col.search(vector=[1, 0, 0], top=3)
    assert [h.id for h in res.hits] == ["a", "b", "c"]
    # the score of a vector-only collection is the raw cosine, not a calibrated one
    assert [round(h.score, 6) for h in res.hits] == [1.0, round(2**-0.5, 6), 0.0]
    assert [round(h.cosine, 6) for h in res.hits] == [1.0, round(2**-0.5, 6), 0.0]
    assert res.hits[0].metadata == {"camera": "k1"}
    # threshold on a vector-only collection is a cosine floor
    assert [h.id for h in col.search(vector=[1, 0, 0], threshold=0.5).hits] == ["a", "b"]
    assert [h.id for h in col.search(like="a", where={"n": 3}).hits] == ["c"]


def test_add_vectors_last_repeat_wins_and_replaces(engine):
    col = engine.create("v", dim=2)
    assert col.add_vectors(["x", "x"], [[1, 0], [0, 1]], [{"k": 1}, {"k": 2}]) == 1
    assert col.count() == 1
    assert col.get("x") == {"id": "x", "metadata": {"k": 2}}
    col.add_vectors(["x"], [[1, 0]])
    assert col.get("x") == {"id": "x", "metadata": {}}
    assert np.allclose(col.store.get(["x"])[0].vector, [1, 0])


@pytest.mark.parametrize(
    "ids, vectors, metadata, error, message",
    [
        (["a"], [[1, 0, 0]], None, BadVector, "dimension"),
        (["a", "b"], [[1, 0]], None, BadVector, "2 ids but 1 vectors"),
        ([""], [[1, 0]], None, ClipseekError, "bad record id ''"),
        (["a"], [[1, 0]], [{"_sha256": "x"}], ClipseekError, "bad metadata field name '_sha256'"),
        (["a"], [[1, 0]], [{}, {}], ClipseekError, "1 ids but 2 metadata"),
        (["a"], [[float("nan"), 0]], None, BadVector, ""),
    ],
)
def test_add_vectors_refuses_bad_rows_and_writes_nothing(engine, ids, vectors, metadata, error, message):
    col = engine.create("v", dim=2)
    with pytest.raises(error, match=message):
        col.add_vectors(ids, vectors, metadata)
    assert col.count() == 0


def test_dimension_and_model_are_exclusive_and_checked(engine):
    with pytest.raises(ClipseekError, match="not both"):
        engine.create("v", model="offline", dim=3)
    for bad in (0, -1, 2.5, True, 70000):
        with pytest.raises(ClipseekError, match="bad dimension"):
            engine.create("v", dim=bad)
    assert not engine.exists("v")


def test_vector_only_collection_reopens(tmp_path):
    with Engine(tmp_path) as e:
        e.create("v", dim=2).add_vectors(["a"], [[0, 3]], [{"t": "x"}])
    with Engine(tmp_path) as e:
        col = e.open("v")
        assert col.vector_only and col.encoder_info.dim == 2
        hit = col.search(vector=[0, 1]).hits[0]
        assert (hit.id, round(hit.score, 6), hit.metadata) == ("a", 1.0, {"t": "x"})


def test_concurrent_first_uses_load_one_encoder(tmp_path):
    """The server's first requests arrive together: each model must be built once and shared."""
    import threading
    import time

    from clipseek.plugins import get_registry

    made = []
    real = get_registry().make_encoder

    def counting(name):
        made.append(name)
        time.sleep(0.05)  # loading a model takes time: the window in which others ask too
        return real(name)

    engine = Engine(tmp_path)
    engine_registry = get_registry()
    engine_registry.make_encoder, saved = counting, engine_registry.make_encoder
    try:
        barrier = threading.Barrier(8)
        got = []

        def first_use():
            barrier.wait()
            got.append(engine.encoder("test-colors"))

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine_registry.make_encoder = saved
    assert made == ["test-colors"]
    assert len({id(e) for e in got}) == 1
