"""Manifest sources end to end: files written here, indexed through the CLI in process with the
test encoder, then checked by ids, metadata types, filters, failure reasons and counts."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import COLORS

from clipseek.cli import cli

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    data = str(tmp_path / "data")

    def invoke(*args: str, code: int = 0, input: str | None = None):  # type: ignore[no-untyped-def]
        res = runner.invoke(cli, ["--data-dir", data, *args], input=input, catch_exceptions=False)
        assert res.exit_code == code, res.output
        return res

    return invoke


def index_json(run, *args: str, code: int = 0) -> dict:  # type: ignore[no-untyped-def]
    res = run("index", *args, "--model", "test-colors", "-q", "--json", code=code)
    return json.loads(res.output)["sources"][0]  # type: ignore[no-any-return]


def search_json(run, col: str, *where: str, text: str = "red", top: int = 50) -> dict:  # type: ignore[no-untyped-def]
    args = ["search", text, "-c", col, "-n", str(top), "--json"]
    for w in where:
        args += ["-w", w]
    return {h["id"]: h["metadata"] for h in json.loads(run(*args).output)["hits"]}


@pytest.fixture
def pics(tmp_path, make_image) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "m" / "img"
    make_image(d / "red.jpg", COLORS["red"])
    make_image(d / "green.png", COLORS["green"])
    make_image(d / "blue.png", COLORS["blue"])
    (d / "text.png").write_text("not a png")
    return d.parent


def test_csv_manifest_types_captions_filters_and_bad_rows(run, pics, tmp_path) -> None:  # type: ignore[no-untyped-def]
    man = pics / "cars.csv"
    with man.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "caption", "price", "score", "taken", "code", "make"])
        w.writerow(["r1", "img/red.jpg", "a red car", "12000", "0.5", "2024-05-01 08:00:00", "007", "audi"])
        w.writerow(["g1", "img/green.png", "a green car", "9000", "1.25", "2024-06-01T09:30:00", "010", "bmw"])
        w.writerow(["x1", "", "no image", "1", "1", "", "", ""])  # bad row: empty image cell
        w.writerow(["m1", "img/missing.jpg", "gone", "5", "", "", "", "vw"])
        w.writerow(["t1", "img/text.png", "not an image", "5", "", "", "", "vw"])
        w.writerow(["u1", "http://127.0.0.1:9/cat.jpg", "a url cat", "7", "", "", "", "kia"])
        w.writerow(["b1", "img/blue.png", "a blue car", "3", "", "", "", "fiat", "surplus"])  # bad row: 9 cells
    src = index_json(run, str(man), "-c", "cars")
    assert src["added"] == 2
    reasons = {f["id"]: f["reason"] for f in src["failed"]}
    assert reasons == {
        f"{man}:3": "bad_row",
        f"{man}:7": "bad_row",
        "m1": "missing_file",
        "t1": "not_an_image",
        "u1": "refused_address",  # a URL row is downloaded: a loopback host is refused by default
    }
    msgs = {f["id"]: f["message"] for f in src["failed"]}
    assert msgs[f"{man}:3"] == f"{man}: row 3, column 'image': no image path or URL in column 'image'"
    assert msgs[f"{man}:7"] == f"{man}: row 7: the row has 9 cells, the header 8"
    assert src["failed_by_reason"] == {"bad_row": 2, "missing_file": 1, "not_an_image": 1, "refused_address": 1}

    hits = search_json(run, "cars")
    assert set(hits) == {"r1", "g1"}
    r1 = hits["r1"]
    assert r1["caption"] == "a red car" and r1["price"] == 12000 and r1["score"] == 0.5
    assert r1["taken"] == "2024-05-01T08:00:00" and r1["code"] == "007" and r1["make"] == "audi"
    assert r1["path"] == str((pics / "img" / "red.jpg").resolve())
    # typed metadata filters: numbers compare as numbers, times as times, captions match
    assert set(search_json(run, "cars", "price>=10000")) == {"r1"}
    assert set(search_json(run, "cars", "taken>=2024-05-15")) == {"g1"}
    assert set(search_json(run, "cars", "caption=a green car")) == {"g1"}

    # a re-run skips every unchanged row, and reports the same failures
    again = index_json(run, str(man), "-c", "cars")
    assert again["added"] == 0 and again["unchanged"] == 2 and len(again["failed"]) == 5


def test_url_rows_become_url_refs_with_stable_ids_and_fingerprints(pics) -> None:  # type: ignore[no-untyped-def]
    from clipseek.sources import source_for

    man = pics / "web.jsonl"
    rows = [
        {"image_url": "https://a.example/1.jpg", "caption": "one", "tags": ["x", "y"], "w": 3},
        {"image_url": "http://b.example/2.png", "text": "ignored: caption is taken", "caption": "two"},
    ]
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    refs = list(source_for(man))
    assert [(r.id, r.url, r.path) for r in refs] == [
        ("https://a.example/1.jpg", "https://a.example/1.jpg", None),
        ("http://b.example/2.png", "http://b.example/2.png", None),
    ]
    assert refs[0].metadata == {"caption": "one", "tags": ["x", "y"], "w": 3, "url": "https://a.example/1.jpg"}
    again = list(source_for(man))
    assert [r.fingerprint for r in again] == [r.fingerprint for r in refs] and refs[0].fingerprint.startswith("url:")
    # an edited caption is a changed row
    rows[0]["caption"] = "uno"
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert next(iter(source_for(man))).fingerprint != refs[0].fingerprint


def test_parquet_typed_columns_explicit_names_and_duplicates(run, pics) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    table = pa.table(
        {
            "key": ["a", "b", "a"],
            "file": ["img/red.jpg", "img/green.png", "img/blue.png"],
            "desc": ["first red", "green", "blue wins"],
            "n": pa.array([1, 2, 3], pa.int64()),
            "when": pa.array([datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)] * 3, pa.timestamp("s", tz="UTC")),
            "labels": [["car", "red"], ["car"], ["car", "blue"]],
        }
    )
    man = pics / "cap.parquet"
    pq.write_table(table, man, row_group_size=2)
    src = index_json(
        run, str(man), "-c", "pq", "--image-column", "file", "--caption-column", "desc", "--id-column", "key"
    )
    # id "a" is new: its first row adds it, its last row updates it
    assert src["added"] == 2 and src["updated"] == 1 and src["failed"] == []
    assert src["duplicate_ids"] == [{"id": "a", "rows": [1, 3]}]
    hits = search_json(run, "pq", text="blue")
    assert set(hits) == {"a", "b"}
    assert hits["a"]["caption"] == "blue wins" and hits["a"]["n"] == 3  # the last row wins
    assert hits["a"]["when"] == "2024-01-02T03:04:05+00:00" and hits["a"]["labels"] == ["car", "blue"]
    assert set(search_json(run, "pq", "labels=blue")) == {"a"}
    assert set(search_json(run, "pq", "n<3")) == {"b"}
    text = run("index", str(man), "-c", "pq", "--image-column", "file", "--caption-column", "desc",
               "--id-column", "key", "-q").output
    assert "1 ids appear more than once; the last row wins: a (rows 1, 3)" in text


def test_missing_image_column_and_unknown_column_are_clear_errors(run, pics) -> None:  # type: ignore[no-untyped-def]
    man = pics / "bad.csv"
    man.write_text("name,caption\nx,y\n")
    res = run("index", str(man), "-c", "b", "--model", "test-colors", "-q", code=1)
    assert res.output.strip() == (
        f"Error: {man}: no image column (looked for image, path, url, image_url, file; columns: name, caption); "
        "name it with --image-column"
    )
    res = run("index", str(man), "-c", "b", "--model", "test-colors", "-q", "--image-column", "pic", code=1)
    assert res.output.strip() == f"Error: {man}: no column 'pic' for the image (columns: name, caption)"
    broken = pics / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    res = run("index", str(broken), "-c", "b", "--model", "test-colors", "-q", code=1)
    assert res.output.startswith(f"Error: {broken}: not a readable Parquet file")


def test_json_array_list_and_stdin(run, pics) -> None:  # type: ignore[no-untyped-def]
    arr = pics / "a.json"
    arr.write_text(json.dumps([{"path": "img/red.jpg", "k": 1}, {"path": "img/green.png", "k": 2}, 5]))
    src = index_json(run, str(arr), "-c", "j")
    assert src["added"] == 2 and [(f["id"], f["reason"]) for f in src["failed"]] == [(f"{arr}:3", "bad_row")]
    assert src["failed"][0]["message"] == f"{arr}: row 3: not a JSON object (int)"

    lst = pics / "urls.txt"
    lst.write_text("# my list\nimg/red.jpg\n\nimg/blue.png\nhttp://127.0.0.1:9/a.jpg\n")
    src = index_json(run, str(lst), "-c", "l")
    assert src["added"] == 2 and [(f["id"], f["reason"]) for f in src["failed"]] == [
        ("http://127.0.0.1:9/a.jpg", "refused_address")
    ]
    ids = set(search_json(run, "l"))
    assert ids == {str((pics / "img" / "red.jpg").resolve()), str((pics / "img" / "blue.png").resolve())}

    stdin = "\n".join([str(pics / "img" / "green.png"), str(pics / "img" / "nope.png")]) + "\n"
    res = run("index", "-", "-c", "s", "--model", "test-colors", "-q", "--json", input=stdin)
    src = json.loads(res.output)["sources"][0]
    assert src["added"] == 1 and [f["reason"] for f in src["failed"]] == ["missing_file"]
    res = run("index", "-", "-c", "s2", "--model", "test-colors", "-q", "--json",
              input=json.dumps({"image": str(pics / "img" / "red.jpg"), "id": "r"}) + "\n")
    assert json.loads(res.output)["sources"][0]["added"] == 1
    assert set(search_json(run, "s2")) == {"r"}


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards(run, pics, tmp_path) -> None:  # type: ignore[no-untyped-def]
    shards = tmp_path / "shards"
    shards.mkdir()
    img = pics / "img"
    with tarfile.open(shards / "s-000.tar", "w") as t:
        _tar_add(t, "0001.jpg", (img / "red.jpg").read_bytes())
        _tar_add(t, "0001.txt", "a red thing".encode())
        _tar_add(t, "0002.png", (img / "green.png").read_bytes())
        _tar_add(t, "0002.json", json.dumps({"id": "g", "size": 4}).encode())
    with tarfile.open(shards / "s-001.tar", "w") as t:
        _tar_add(t, "0003.json", json.dumps({"caption": "no image"}).encode())
        _tar_add(t, "0004.png", (img / "text.png").read_bytes())
    src = index_json(run, str(shards), "-c", "w")
    assert src["added"] == 2
    shard1 = (shards / "s-001.tar").resolve()
    assert sorted((f["id"], f["reason"]) for f in src["failed"]) == [
        (f"{shard1}/0003", "bad_row"),
        (f"{shard1}/0004", "not_an_image"),
    ]
    hits = search_json(run, "w")
    red = f"{(shards / 's-000.tar').resolve()}/0001"
    assert set(hits) == {red, "g"}
    assert hits[red]["caption"] == "a red thing" and hits["g"]["size"] == 4 and hits["g"]["shard"] == "s-000.tar"


def _hf_dataset(path: Path, img: Path) -> None:
    """A dataset as ``datasets.Dataset.save_to_disk`` lays it out (Arrow stream files, state.json,
    dataset_info.json), with an ``Image`` feature (struct of bytes and path)."""
    path.mkdir(parents=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": (img / "red.jpg").read_bytes(), "path": None},
                 {"bytes": None, "path": str(img / "green.png")}],
                image_type,
            ),
            "text": ["red one", "green one"],
            "likes": [3, 4],
        }
    )
    with pa.ipc.new_stream(str(path / "data-00000-of-00001.arrow"), table.schema) as w:
        w.write_table(table)
    (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (path / "dataset_info.json").write_text(json.dumps({"features": {"image": {"_type": "Image"}}}))


def test_hugging_face_dataset_directory(run, pics, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = tmp_path / "hf"
    _hf_dataset(ds, pics / "img")
    src = index_json(run, str(ds), "-c", "hf")
    assert src["added"] == 2 and src["failed"] == []
    hits = search_json(run, "hf")
    assert hits[f"{ds.resolve()}#1"]["caption"] == "red one"
    assert hits[str(pics / "img" / "green.png")]["likes"] == 4


def test_real_datasets_save_to_disk(run, pics, tmp_path) -> None:  # type: ignore[no-untyped-def]
    datasets = pytest.importorskip("datasets")
    img = pics / "img"
    ds = datasets.Dataset.from_dict(
        {"image": [str(img / "red.jpg"), str(img / "blue.png")], "caption": ["r", "b"], "id": ["R", "B"]}
    ).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    src = index_json(run, str(tmp_path / "saved"), "-c", "real")
    assert src["added"] == 2 and src["failed"] == []
    hits = search_json(run, "real", text="blue")
    assert {k: v["caption"] for k, v in hits.items()} == {"R": "r", "B": "b"}


def test_columns_options_are_refused_for_folders(run, pics) -> None:  # type: ignore[no-untyped-def]
    res = run("index", str(pics / "img"), "-c", "f", "--model", "test-colors", "-q", "--image-column", "x", code=1)
    assert "apply to manifests" in res.output


def test_json_array_is_read_in_small_pieces_across_chunk_boundaries() -> None:
    from clipseek.manifest import BadRow, _json_array

    text = json.dumps([{"image": f"{i}.jpg", "n": 12345.5 + i, "t": [1, 2]} for i in range(20)], indent=1)
    got = [obj for _, obj in _json_array(io.StringIO(text), "a.json", chunk=7)]
    assert got == json.loads(text)
    cut = list(_json_array(io.StringIO(text[: len(text) // 2]), "a.json", chunk=7))
    assert all(isinstance(o, dict) for _, o in cut[:-1]) and isinstance(cut[-1][1], BadRow)
    assert [o for _, o in cut[:-1]] == json.loads(text)[: len(cut) - 1]


def test_text_cells_are_typed() -> None:
    from clipseek.manifest import text_value

    assert [text_value(s) for s in ["12", "-3", "007", "1.5", "1e3", "", " x ", "2024-05-01 08:00", "2024-05-01"]] == [
        12, -3, "007", 1.5, 1000.0, None, "x", "2024-05-01T08:00:00", "2024-05-01"
    ]


def test_captions_are_drawn_under_grid_thumbnails(run, pics, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    man = pics / "c.jsonl"
    man.write_text(json.dumps({"image": "img/red.jpg", "caption": "CAPTION"}) + "\n")
    index_json(run, str(man), "-c", "g")
    run("search", "red", "-c", "g", "--grid", str(tmp_path / "g.png"))
    # render_grid's layout: a 34 px title, 8 px padding, 200 px thumbnail, then two 18 px text lines
    img = np.asarray(Image.open(tmp_path / "g.png").convert("L"))
    top = 34 + 8 + 200 + 3
    caption_band, empty_band = img[top + 18 : top + 36, 8:208], img[top + 36 : top + 44, 8:208]
    assert empty_band.min() > 200
    assert (caption_band < 128).sum() > 20  # dark text where the caption goes

    from clipseek.grid import caption_of
    from clipseek.types import Hit

    assert caption_of(Hit("x", 0.5, {"caption": "a red car", "file_name": "red.jpg"})) == "a red car"


def test_real_datasets_dataset_dict_gets_a_split_field(run, pics, tmp_path) -> None:  # type: ignore[no-untyped-def]
    datasets = pytest.importorskip("datasets")
    img = pics / "img"

    def part(names: list[str]):  # type: ignore[no-untyped-def]
        return datasets.Dataset.from_dict(
            {"image_url": [str(img / n) for n in names], "text": [n.split(".")[0] for n in names]}
        )

    datasets.DatasetDict({"train": part(["red.jpg", "green.png"]), "test": part(["blue.png"])}).save_to_disk(
        str(tmp_path / "dd")
    )
    src = index_json(run, str(tmp_path / "dd"), "-c", "dd")
    assert src["added"] == 3 and src["failed"] == []
    hits = search_json(run, "dd")
    assert {Path(k).name: (v["split"], v["caption"]) for k, v in hits.items()} == {
        "red.jpg": ("train", "red"), "green.png": ("train", "green"), "blue.png": ("test", "blue")
    }
    assert set(search_json(run, "dd", "split=test")) == {str(img / "blue.png")}


def test_jsonl_columns_are_detected_beyond_the_first_object(pics) -> None:  # type: ignore[no-untyped-def]
    from clipseek.sources import source_for

    man = pics / "v.jsonl"
    man.write_text('{"image": "img/red.jpg"}\n{"image": "img/blue.png", "id": "b", "caption": "blue"}\n')
    refs = list(source_for(man))
    assert [(Path(r.id).name, r.metadata.get("caption")) for r in refs] == [("red.jpg", None), ("b", "blue")]
    assert [f.message for f in source_for(man).problems] == []
    from clipseek.manifest import Columns

    named = source_for(man, Columns(id="id"))
    assert [r.id for r in named] == ["b"]
    assert [f.message for f in named.problems] == [f"{man}: row 1, column 'id': empty id in column 'id'"]
