"""The Milvus store beyond the contract suite (which runs over it unchanged): how filters and ids
become Milvus expressions, settings, odd ids and values on a real server, metadata round trips,
consistency, the engine and CLI with ``--store milvus``, ``clipseek migrate``, and a server
stopped in the middle of an index run. Congruence with the local store and filtered recall are
in ``test_milvus_congruence.py``.

Tests marked ``milvus`` need the server at $CLIPSEEK_TEST_MILVUS_URI (see conftest.py)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import clipseek
from clipseek import filters
from clipseek.cli import cli
from clipseek.errors import BadFilter, ClipseekError, StoreUnavailable
from clipseek.stores.milvus import MilvusStore, condition_expr, filter_forms, literal, settings
from clipseek.types import Record

ODD = ['a"b', "c'd", "e\\f", "中文 路径/猫.jpg", "g\nh\tj", "q\\\"r", "😀x", "trailing\\", "nul\x00byte", "line\u2028sep"]


# ------------------------------------------------------------------------------------- no server


def test_string_literals_escape_quotes_backslashes_and_controls() -> None:
    assert literal('a"b') == '"a\\"b"'
    assert literal("e\\f") == '"e\\\\f"'
    assert literal("g\nh\tj") == '"g\\nh\\tj"'
    assert literal("nul\x00") == '"nul\\u0000"'
    assert literal("中文 😀") == '"中文 😀"'  # as they are: no \\u escapes Go cannot read back (surrogates)


def test_conditions_become_expressions_on_the_filter_forms() -> None:
    cam = "k" + "camera".encode().hex()
    year = "k" + "year".encode().hex()
    assert condition_expr(filters.parse({"camera": "cam-3"})[0]) == f'(json_contains_any(f["{cam}"]["s"], ["cam-3"]))'
    # a value that reads as a number matches equal strings or equal numbers
    assert condition_expr(filters.parse({"year": "2024"})[0]) == (
        f'(json_contains_any(f["{year}"]["s"], ["2024"]) or json_contains_any(f["{year}"]["n"], ["2024.0"]))'
    )
    assert condition_expr(filters.parse({"year": 2024})[0]) == f'(json_contains_any(f["{year}"]["n"], ["2024.0"]))'
    assert condition_expr(filters.Condition("camera", "in", ("b", 'a"', "b"))) == (
        f'(json_contains_any(f["{cam}"]["s"], ["a\\"", "b"]))'
    )
    # ranges: some element above the bound <=> the greatest is; below <=> the least is
    assert condition_expr(filters.parse({"year": {"gt": 2023}})[0]) == f'(f["{year}"]["n1"] > 2023.0)'
    assert condition_expr(filters.parse({"year": {"lte": "2022"}})[0]) == f'(f["{year}"]["n0"] <= 2022.0)'
    t = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()
    assert condition_expr(filters.parse({"year": {"gte": "2024-05-01"}})[0]) == f'(f["{year}"]["t1"] >= {t!r})'
    with pytest.raises(BadFilter):
        condition_expr(filters.Condition("year", "gt", "soon"))


def test_filter_forms_of_each_kind_of_value() -> None:
    forms = filter_forms(
        {"cam": "cam-1", "year": "2024", "n": 42, "speed": [3, 7.5, "x"], "ok": True, "t": "2024-05-01T02:00:00+02:00",
         "none": None, "nested": {"a": 1}, "_fingerprint": "9:9"}
    )
    k = {name: "k" + name.encode().hex() for name in ("cam", "year", "n", "speed", "ok", "t", "none", "nested", "_fingerprint")}
    assert forms["_k"] == list(k.values())  # every field, unfilterable ones too (they are fields)
    assert forms[k["cam"]] == {"s": ["cam-1"]}
    assert forms[k["year"]] == {"s": ["2024"], "n": ["2024.0"], "n0": 2024.0, "n1": 2024.0}
    assert forms[k["n"]] == {"n": ["42.0"], "n0": 42.0, "n1": 42.0}
    assert forms[k["speed"]] == {"s": ["x"], "n": ["3.0", "7.5"], "n0": 3.0, "n1": 7.5}
    assert forms[k["ok"]] == {"s": ["true"]}
    t = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()
    assert forms[k["t"]] == {"s": ["2024-05-01T02:00:00+02:00"], "t0": t, "t1": t}
    assert k["none"] not in forms and k["nested"] not in forms


def test_settings_come_from_arguments_then_environment_then_the_configuration_file(tmp_path, monkeypatch) -> None:
    for key in ("URI", "TOKEN", "DB", "PREFIX"):
        monkeypatch.delenv(f"CLIPSEEK_MILVUS_{key}", raising=False)
    monkeypatch.delenv("CLIPSEEK_CONFIG", raising=False)
    monkeypatch.setenv("CLIPSEEK_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert settings() == {"uri": "http://localhost:19530", "token": "", "db": "default", "prefix": "clipseek_"}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "clipseek.toml").write_text('[milvus]\nuri = "http://home:19530"\n')
    assert settings()["uri"] == "http://home:19530"
    # ./clipseek.toml, the file `clipseek serve` reads, comes first; its [server] table is not ours
    conf = tmp_path / "clipseek.toml"
    conf.write_text('[server]\nport = 8000\n[milvus]\nuri = "http://conf:19530"\ntoken = "root:secret"\ndb = "cars"\n')
    assert settings() == {"uri": "http://conf:19530", "token": "root:secret", "db": "cars", "prefix": "clipseek_"}
    monkeypatch.setenv("CLIPSEEK_CONFIG", str(tmp_path / "home" / "clipseek.toml"))
    assert settings()["uri"] == "http://home:19530"
    monkeypatch.setenv("CLIPSEEK_CONFIG", str(conf))
    monkeypatch.setenv("CLIPSEEK_MILVUS_URI", "http://env:19530")
    monkeypatch.setenv("CLIPSEEK_MILVUS_PREFIX", "city_")
    assert settings()["uri"] == "http://env:19530" and settings()["prefix"] == "city_"
    assert settings(uri="http://arg:1")["uri"] == "http://arg:1"
    with pytest.raises(ClipseekError, match="prefix"):
        settings(prefix="bad-prefix")
    conf.write_text("[milvus\n")
    monkeypatch.delenv("CLIPSEEK_MILVUS_URI")
    with pytest.raises(ClipseekError, match="not a valid configuration file"):
        settings()


def test_a_token_is_never_written_to_collection_json(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClipseekError, match="CLIPSEEK_MILVUS_TOKEN"):
        engine.create("cars", model="test-colors", store="milvus", store_options={"token": "root:secret"})
    assert not engine.exists("cars")


def test_an_unreachable_server_is_named_not_a_traceback(tmp_path, monkeypatch) -> None:
    pytest.importorskip("pymilvus")
    monkeypatch.setenv("CLIPSEEK_HOME", str(tmp_path / "home"))
    img = tmp_path / "imgs"
    img.mkdir()
    res = CliRunner().invoke(
        cli,
        ["index", str(img), "-c", "cars", "--model", "test-colors", "--store", "milvus", "--store-uri", "http://127.0.0.1:9"],
    )
    assert res.exit_code == 1
    assert "Error: the Milvus server at http://127.0.0.1:9 is not answering" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "home" / "collections" / "cars").exists()  # no half-made collection left


# ------------------------------------------------------------------------------------- on a server


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    st = MilvusStore(tmp_path / "s", 4)
    yield st
    st.close()


@pytest.mark.milvus
def test_odd_ids_and_values_round_trip_and_filter(store) -> None:  # type: ignore[no-untyped-def]
    e = np.eye(4, dtype=np.float32)
    store.upsert([Record(i, e[k % 4], {"name": i, "tags": [i, "x"], "键": k}) for k, i in enumerate(ODD)])
    assert store.count() == len(ODD)
    got = store.get(ODD + ["missing"])
    assert [g.id for g in got[:-1]] == ODD and got[-1] is None
    assert [g.metadata for g in got[:-1]] == [{"name": i, "tags": [i, "x"], "键": k} for k, i in enumerate(ODD)]
    for k, i in enumerate(ODD):
        assert list(store.ids(filters.parse({"name": i}))) == [i]
        assert list(store.ids(filters.parse({"tags": {"in": [i, "nope"]}}))) == [i]
        assert [h.id for h in store.search(e[k % 4], 3, where=filters.parse({"name": i}))] == [i]
        assert i not in {h.id for h in store.search(e[k % 4], 20, exclude=[i])}
    assert store.count(filters.parse({"键": {"gte": 8}})) == 2
    assert store.fields() == ["name", "tags", "键"]
    assert store.delete([ODD[0], ODD[3], "missing"]) == 2
    assert sorted(store.ids()) == sorted(set(ODD) - {ODD[0], ODD[3]})


@pytest.mark.milvus
def test_ids_pages_through_every_record_once(store) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    ids = [f"{p}{i:04d}" for i in range(300) for p in ("a", 'b"', "中")]
    for i in range(0, len(ids), 250):  # several calls: more than one segment part to page through
        store.upsert([Record(x, rng.standard_normal(4), {"g": k % 3}) for k, x in enumerate(ids[i : i + 250], i)])
    kw = store._read_kw()
    pages = list(store._pages("", ["id"], kw, page=37))
    flat = [r["id"] for p in pages for r in p]
    assert flat == sorted(ids) and len(pages) >= len(ids) // 37
    assert sorted(store.ids(filters.parse({"g": 1}))) == sorted(ids[1::3])
    assert len(store.values("g")) == 900 and store.values("g")['b"0004'] == 4 % 3


@pytest.mark.milvus
def test_metadata_of_every_type_round_trips(store) -> None:  # type: ignore[no-untyped-def]
    meta = {
        "s": "文字 \"quoted\" \\", "i": 2**53 + 1, "neg": -7, "f": 0.1 + 0.2, "tiny": 5e-324, "big": 1.5e300, "b": False,
        "none": None, "list": [1, "two", 3.5, True, None, ["nested"]], "dict": {"a": {"b": [1, 2]}},
        "when": datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc), "empty": "", "zero": -0.0,
    }
    store.upsert([Record("m", np.ones(4), meta)])
    got = store.get(["m"])[0].metadata
    want = {**meta, "when": "2024-05-01T12:30:00+00:00"}  # a datetime is stored as ISO text, as the local store does
    assert got == want and json.dumps(got) == json.dumps(want)  # ints stay ints, floats keep every digit
    assert type(got["i"]) is int and type(got["f"]) is float
    assert store.count(filters.parse({"f": 0.30000000000000004})) == 1
    assert store.count(filters.parse({"f": 0.3})) == 0
    assert store.count(filters.parse({"when": {"gt": "2024-05-01T12:29:59Z"}})) == 1
    assert store.count(filters.parse({"i": {"gte": 2**53}})) == 1  # compared as doubles, as the filters say
    assert store.count(filters.parse({"i": {"gt": 2**53}})) == 0


@pytest.mark.milvus
def test_reads_see_every_write_that_returned_before_them(tmp_path) -> None:
    """Writer and reader are separate clients (their own connections), as a CLI indexing and a
    REST service searching are: at the default level ("strong") an upsert is found, and a delete
    is gone, as soon as the writer's call returns, every time. A "session" store sees its own
    writes the same way (a delete's result carries no timestamp on Milvus 2.3: one is taken after it)."""
    writer = MilvusStore(tmp_path / "c", 8)
    reader = MilvusStore(tmp_path / "c", 8, read_only=True)
    session = MilvusStore(tmp_path / "c", 8, consistency="session")
    rng = np.random.default_rng(3)
    writer.upsert([Record(f"base{i}", rng.standard_normal(8), {"k": "base"}) for i in range(200)])
    try:
        for r in range(15):
            v = rng.standard_normal(8)
            writer.upsert([Record(f"new{r}", v, {"k": "new"})])
            assert reader.get([f"new{r}"])[0] is not None
            assert reader.search(v, 1)[0].id == f"new{r}"
            assert reader.count(filters.parse({"k": "new"})) == 1
            assert writer.delete([f"new{r}"]) == 1
            assert reader.get([f"new{r}"]) == [None]
            assert f"new{r}" not in {h.id for h in reader.search(v, 5)}
            assert reader.count(filters.parse({"k": "new"})) == 0
            old = writer.get([f"base{r}"])[0]
            writer.delete([old.id])
            assert reader.search(old.vector, 1)[0].id != old.id
            session.upsert([Record(f"own{r}", v, {"k": "own"})])
            assert session.search(v, 1)[0].id == f"own{r}"
            session.delete([f"own{r}"])
            assert session.get([f"own{r}"]) == [None] and session.search(v, 1)[0].id != f"own{r}"
        assert reader.count() == 200 - 15
        assert reader.stats()["consistency"] == "strong" and session.stats()["consistency"] == "session"
    finally:
        for st in (writer, reader, session):
            st.close()


@pytest.mark.milvus
def test_a_flat_index_is_exact_and_refuses_other_names(tmp_path) -> None:
    with pytest.raises(ClipseekError, match="unknown Milvus index"):
        MilvusStore(tmp_path / "x", 4, index="IVF")
    with MilvusStore(tmp_path / "f", 8, index="FLAT", exact_rows=0) as st:  # every search through Milvus
        rng = np.random.default_rng(4)
        x = rng.standard_normal((500, 8)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        st.upsert([Record(f"r{i:03d}", x[i], {"odd": i % 2}) for i in range(500)])
        assert st.stats()["index"] == "FLAT"
        for q in x[:5]:
            s = x @ q
            want = sorted(range(500), key=lambda i: (-s[i], i))[:10]
            assert [h.id for h in st.search(q, 10)] == [f"r{i:03d}" for i in want]
            odd = [i for i in sorted(range(500), key=lambda i: (-s[i], i)) if i % 2][:10]
            assert [h.id for h in st.search(q, 10, where=filters.parse({"odd": 1}))] == [f"r{i:03d}" for i in odd]
        # neighbours: one batched Milvus search, the same answers as a search per record
        ask = ["r000", "r123", "nope", "r499"]
        near = st.neighbours(ask, 5, min_cosine=0.0)
        assert near[2] == []
        for rid, got in zip(ask, near):
            if rid != "nope":
                want = st.search(st.get([rid])[0].vector, 5, min_cosine=0.0, exclude=[rid])
                assert [i for i, _ in got] == [h.id for h in want] and rid not in {i for i, _ in got}
                # (search normalises its query again: the last bits may differ)
                assert [c for _, c in got] == pytest.approx([h.cosine for h in want], abs=1e-6)


# ------------------------------------------------------------------------------------- engine and CLI


def _table(output: str) -> list[str]:
    """The result rows of `clipseek search` (the header line holds timings)."""
    return [line for line in output.splitlines()[1:] if line.strip()]


@pytest.mark.milvus
def test_cli_index_and_search_on_milvus_answer_like_local(tmp_path, photo_dir, milvus_uri, monkeypatch) -> None:
    monkeypatch.setenv("CLIPSEEK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLIPSEEK_MILVUS_URI")  # the collection must remember the uri it was given
    run = CliRunner().invoke
    res = run(cli, ["index", str(photo_dir), "-c", "cars", "--model", "test-colors", "--store", "milvus",
                    "--store-uri", milvus_uri, "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "5 added" in res.output and "collection 'cars' now holds 5 images" in res.output
    config = json.loads((tmp_path / "home" / "collections" / "cars" / "collection.json").read_text())
    assert config["store"] == "milvus" and config["store_options"] == {"uri": milvus_uri}
    res = run(cli, ["index", str(photo_dir), "-c", "local", "--model", "test-colors", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for args in (["红色"], ["blue", "-n", "3"], ["--like", str(photo_dir / "red.jpg")], ["white", "-w", "folder=sub"]):
        on_milvus = run(cli, ["search", *args, "-c", "cars"], catch_exceptions=False)
        on_local = run(cli, ["search", *args, "-c", "local"], catch_exceptions=False)
        assert on_milvus.exit_code == on_local.exit_code == 0, on_milvus.output
        assert _table(on_milvus.output) == _table(on_local.output) and len(_table(on_local.output)) >= 2
    hits = json.loads(run(cli, ["search", "红色", "-c", "cars", "--json"]).output)["hits"]
    assert hits[0]["id"] == str(photo_dir / "red.jpg") and hits[0]["metadata"]["folder"] == ""
    res = run(cli, ["info", "cars", "--json"])
    assert json.loads(res.output)["store"] == "milvus" and json.loads(res.output)["count"] == 5
    # a re-run finds every image unchanged: the fingerprints come back from Milvus
    res = run(cli, ["index", str(photo_dir), "-c", "cars", "-q"], catch_exceptions=False)
    assert "0 added, 0 updated, 5 unchanged" in res.output
    res = run(cli, ["index", str(photo_dir), "-c", "cars", "--store-uri", "http://elsewhere:19530"])
    assert res.exit_code == 1 and f"lives in the milvus at {milvus_uri} store" in res.output
    res = run(cli, ["delete", "-c", "cars", "-w", "folder=sub"], catch_exceptions=False)
    assert res.exit_code == 0 and run(cli, ["info", "cars", "--json"]).output.count('"count": 3') == 1
    name = json.loads((tmp_path / "home" / "collections" / "cars" / "store" / "milvus.json").read_text())["collection"]
    from pymilvus import utility

    with MilvusStore(tmp_path / "probe", 4) as probe:  # any connection will do to look at the server
        assert utility.has_collection(name, using=probe._alias)
        res = run(cli, ["delete", "--all", "-c", "cars", "--yes"])
        assert res.exit_code == 0, res.output
        assert not utility.has_collection(name, using=probe._alias)  # dropped on the server too
    assert not (tmp_path / "home" / "collections" / "cars").exists()


@pytest.mark.milvus
def test_python_api_collection_on_milvus(tmp_path, photo_dir, milvus_uri) -> None:
    with clipseek.Engine(tmp_path / "data") as eng:
        col = eng.collection("cars", model="test-colors", store="milvus", store_uri=milvus_uri)
        col.index(photo_dir)
        assert col.count() == 5 and col.store.uri == milvus_uri
        top = col.search("yellow", top=1).hits[0]
        assert top.id.endswith("yellow.bmp") and top.metadata["folder"] == "sub"
    with clipseek.Engine(tmp_path / "data") as eng:  # reopened from collection.json alone
        col = eng.collection("cars")
        assert col.store_name == "milvus" and col.count() == 5
        with pytest.raises(ClipseekError, match="use `clipseek migrate` to move it"):
            eng.collection("cars", store="local")


@pytest.mark.milvus
def test_migrate_local_to_milvus_resumes_verifies_and_switches(tmp_path, photo_dir, milvus_uri, monkeypatch) -> None:
    from clipseek import migrate as migration

    monkeypatch.setenv("CLIPSEEK_HOME", str(tmp_path / "home"))
    run = CliRunner().invoke
    assert run(cli, ["index", str(photo_dir), "-c", "cars", "--model", "test-colors", "-q"]).exit_code == 0
    before = run(cli, ["search", "green", "-c", "cars"]).output
    # the first run dies after its first batch of 2 (the server "went away")
    real_upsert = MilvusStore.upsert
    calls = []

    def failing_upsert(self, records):  # type: ignore[no-untyped-def]
        calls.append(len(records))
        if len(calls) == 2:
            raise StoreUnavailable("the Milvus server at x is not answering (test)")
        real_upsert(self, records)

    monkeypatch.setattr(MilvusStore, "upsert", failing_upsert)
    res = run(cli, ["migrate", "-c", "cars", "--to", "milvus", "--store-uri", milvus_uri, "--batch-size", "2", "-q"])
    assert res.exit_code == 1 and "not answering (test)" in res.output
    state = json.loads((tmp_path / "home" / "collections" / "cars" / migration.STATE).read_text())
    assert state["done"] == 2 and state["store_dir"] == "store.milvus"
    assert json.loads((tmp_path / "home" / "collections" / "cars" / "collection.json").read_text())["store"] == "local"
    assert _table(run(cli, ["search", "green", "-c", "cars"]).output) == _table(before)  # still served locally
    monkeypatch.setattr(MilvusStore, "upsert", real_upsert)
    res = run(cli, ["migrate", "-c", "cars", "--to", "milvus", "--store-uri", milvus_uri, "--batch-size", "2", "-q"],
              catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "5 records copied from local to milvus (2 already copied by an earlier run)" in res.output
    assert "5 records equal, 5 of 5 searches identical" in res.output
    config = json.loads((tmp_path / "home" / "collections" / "cars" / "collection.json").read_text())
    assert config["store"] == "milvus" and config["store_dir"] == "store.milvus"
    assert config["store_options"] == {"uri": milvus_uri} and config["migrated"]["from"] == "local"
    assert config["encoder"]["name"] == "test-colors" and config["calibration"]["text"]
    assert _table(run(cli, ["search", "green", "-c", "cars"]).output) == _table(before)
    assert run(cli, ["index", str(photo_dir), "-c", "cars", "-q"]).output.count("5 unchanged") == 1
    # and back, into a new collection: the migrated one is left as it is
    res = run(cli, ["migrate", "-c", "cars", "--to", "local", "--as", "cars-local", "--json", "-q"], catch_exceptions=False)
    out = json.loads(res.output)
    assert out["records"] == 5 and out["searches_identical"] == 5 and out["mismatches"] == []
    assert _table(run(cli, ["search", "green", "-c", "cars-local"]).output) == _table(before)
    assert json.loads(run(cli, ["info", "cars", "--json"]).output)["store"] == "milvus"
    res = run(cli, ["migrate", "-c", "cars", "--to", "milvus", "--store-uri", milvus_uri])
    assert res.exit_code == 1 and "already in the milvus store" in res.output


@pytest.mark.milvus
def test_migrate_refuses_to_switch_to_a_copy_that_differs(tmp_path, photo_dir, milvus_uri, monkeypatch) -> None:
    from clipseek.migrate import MigrationFailed, migrate

    with clipseek.Engine(tmp_path / "data") as eng:
        eng.collection("cars", model="test-colors").index(photo_dir)
        real_upsert = MilvusStore.upsert
        monkeypatch.setattr(MilvusStore, "upsert", lambda self, recs: real_upsert(self, recs[1:]))  # loses records
        with pytest.raises(MigrationFailed, match="records in the copy"):
            migrate(eng, "cars", "milvus", store_uri=milvus_uri, batch_size=2)
        assert eng.open("cars").store_name == "local" and eng.open("cars").count() == 5


# ------------------------------------------------------------------------------------- faults


@pytest.mark.milvus
def test_server_stopped_mid_index_then_restarted_loses_and_duplicates_nothing(tmp_path, make_image) -> None:
    """A server of its own (the session's stays up), killed after the first committed batches of
    an index run: the run fails with an error naming the server; queries too. Restarted on the same
    data, it still has every committed batch, and a second run adds exactly what was missing:
    every record is there once."""
    from _milvus_server import MilvusProcess

    from clipseek.ingest import HASH_KEY, ingest
    from clipseek.sources import FolderSource

    imgs = tmp_path / "imgs"
    rng = np.random.default_rng(9)
    for i in range(40):
        make_image(imgs / f"{i:03d}.png", tuple(int(c) for c in rng.integers(0, 256, 3)))
    server = MilvusProcess(tmp_path / "server", port=0)
    server.start()
    try:
        with clipseek.Engine(tmp_path / "data") as eng:
            col = eng.create("cars", model="test-colors", store="milvus", store_uri=server.uri,
                             store_options={"timeout": 5})
            listed = list(FolderSource(imgs))

            def source():  # type: ignore[no-untyped-def]
                for k, ref in enumerate(listed):
                    if k == 28:  # by now the first batches are committed (every 8 records)
                        server.stop(kill=True)  # a crash: SIGKILL, nothing flushed on the way out
                    yield ref

            with pytest.raises(StoreUnavailable, match=re.escape(f"the Milvus server at {server.uri} is not answering")):
                ingest(source(), col.encoder, col.store, batch_size=4, workers=2, commit_every=8,
                       known=col.store.fingerprints(), hashes=col.store.values(HASH_KEY))
            with pytest.raises(StoreUnavailable, match="is not answering"):
                col.search("red")
        res = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), "search", "red", "-c", "cars"])
        assert res.exit_code == 1 and f"Error: the Milvus server at {server.uri} is not answering" in res.output
        assert "Traceback" not in res.output
        server.start()
        deadline = time.monotonic() + 120
        while True:  # back: it answers once it has loaded the collection again
            try:
                with clipseek.Engine(tmp_path / "data") as eng:
                    eng.open("cars").count()
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the restarted server did not serve the collection in 120 s"
                time.sleep(1)
        with clipseek.Engine(tmp_path / "data") as eng:
            col = eng.open("cars")
            kept = col.count()
            assert 8 <= kept < 40 and kept % 8 == 0  # whole commits only
            report = col.index(imgs)
            assert (report.added, report.unchanged) == (40 - kept, kept)
            assert col.count() == 40
            ids = list(col.store.ids())
            assert len(ids) == len(set(ids)) == 40 and set(ids) == {str(p) for p in sorted(imgs.iterdir())}
            enc = col.encoder
            for rec in col.store.get(ids[::7]):  # complete records: the vector of their own image
                np.testing.assert_allclose(rec.vector, enc.embed_image(enc.load_image(Path(rec.id))), atol=1e-6)
    finally:
        server.stop()
