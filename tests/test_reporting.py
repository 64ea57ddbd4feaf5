"""Reporting of an index run: failures by reason key, --failures FILE.jsonl, `info`'s last run,
the exit status, the progress counters and totals that need no listing of the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import COLORS

from clipseek.cli import cli
from clipseek.failures import REASONS, reason_of


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    data = str(tmp_path / "data")

    def invoke(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
        res = runner.invoke(cli, ["--data-dir", data, *args], catch_exceptions=False)
        assert res.exit_code == code, res.output
        return res

    return invoke


@pytest.fixture
def mixed(tmp_path, make_image) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "mixed"
    make_image(d / "red.jpg", COLORS["red"])
    make_image(d / "blue.png", COLORS["blue"])
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.png").write_text("not a png")
    (d / "other.png").write_text("not a png either")
    return d


def test_summary_splits_failures_by_reason_and_exit_status_is_zero(run, mixed) -> None:  # type: ignore[no-untyped-def]
    res = run("index", str(mixed), "-c", "m", "--model", "test-colors", "-q")
    line = next(ln for ln in res.output.splitlines() if ln.startswith(str(mixed)))
    assert line.startswith(f"{mixed}: 2 added, 0 updated, 0 unchanged, 3 failed (not_an_image 2, empty_file 1) in ")


def test_failures_file_lists_every_skipped_item(run, mixed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    man = tmp_path / "list.txt"
    man.write_text(f"{mixed / 'red.jpg'}\n{mixed / 'gone.jpg'}\nhttp://127.0.0.1:9/x.jpg\n")
    out = tmp_path / "failed.jsonl"
    run("index", str(mixed), str(man), "-c", "f", "--model", "test-colors", "-q", "--failures", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    got = sorted((Path(r["id"]).name, r["reason"], r["source"]) for r in rows)
    assert got == sorted(
        [
            ("empty.jpg", "empty_file", str(mixed / "empty.jpg")),
            ("text.png", "not_an_image", str(mixed / "text.png")),
            ("other.png", "not_an_image", str(mixed / "other.png")),
            ("gone.jpg", "missing_file", str(mixed / "gone.jpg")),
            ("x.jpg", "refused_address", "http://127.0.0.1:9/x.jpg"),
        ]
    )
    assert all(set(r) == {"id", "reason", "message", "source"} for r in rows)
    assert {r["reason"] for r in rows} <= set(REASONS)


def test_info_shows_the_last_run(run, mixed) -> None:  # type: ignore[no-untyped-def]
    run("index", str(mixed), "-c", "i", "--model", "test-colors", "-q")
    info = json.loads(run("info", "i", "--json").output)
    last = info["last_run"]
    assert (last["source"], last["added"], last["failed"], last["completed"]) == (str(mixed), 2, 3, True)
    assert last["failed_by_reason"] == {"not_an_image": 2, "empty_file": 1}
    text = run("info", "i").output
    assert f"  last indexed: {last['finished_at']} from {mixed}: 2 added, 0 updated, 0 unchanged, 3 failed " \
           "(not_an_image 2, empty_file 1)" in text
    run("index", str(mixed), "-c", "i", "-q")
    last = json.loads(run("info", "i", "--json").output)["last_run"]
    assert (last["added"], last["unchanged"], last["failed"]) == (0, 2, 3)


def test_a_job_that_cannot_run_exits_non_zero(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = run("index", str(tmp_path / "nowhere"), "-c", "x", "--model", "test-colors", "-q", code=1)
    assert res.output.strip() == f"Error: {tmp_path / 'nowhere'}: no such file or folder"


def test_progress_gets_a_total_and_named_counters_without_listing_the_source(engine, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipseek.ingest import IngestReport

    for c in ["red", "green", "blue"]:
        make_image(tmp_path / f"{c}.png", COLORS[c])
    rows = [f"{c}.png" for c in ["red", "green", "blue"]] + ["missing.png"]
    pq.write_table(pa.table({"image": rows}), tmp_path / "t.parquet")
    col = engine.create("p", model="test-colors")
    totals: list[int] = []
    seen: list[dict[str, int]] = []
    rep = IngestReport()
    col.index(
        tmp_path / "t.parquet",
        on_total=totals.append,
        on_progress=lambda n: seen.append(dict(rep.counts)),
        report=rep,
    )
    assert totals == [4]  # from the Parquet metadata
    assert rep.counts == {"encoded": 3, "failed": 1}
    assert seen == [{"failed": 1}, {"encoded": 3, "failed": 1}]  # the missing file fails before the batch is full


def test_reason_keys() -> None:
    from clipseek.errors import BadImage

    class Http404(BadImage):
        reason = "http_404"

    assert reason_of(BadImage("x: no such file")) == "missing_file"
    assert reason_of(BadImage("x: corrupt or truncated image (broken data stream)")) == "corrupt_image"
    assert reason_of(Http404("x: HTTP 404")) == "http_404"
    assert reason_of(ValueError("something new")) == "other"


def test_bad_rows_count_as_failed_while_the_job_runs(engine, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    from clipseek.ingest import IngestReport

    make_image(tmp_path / "red.png", COLORS["red"])
    (tmp_path / "m.jsonl").write_text('{"image": "red.png"}\nnot json\n{"image": "red.png"}\n{"x": 1}\n')
    col = engine.create("b", model="test-colors")
    rep = IngestReport()
    seen: list[int] = []
    col.index(tmp_path / "m.jsonl", on_progress=lambda n: seen.append(rep.counts.get("failed", 0)), report=rep)
    assert seen[-1] == 1  # the bad JSON on row 2 was counted before the last batch was encoded
    assert rep.repeated_ids == [(str(tmp_path / "red.png"), [1, 3])]  # and its second pass reports nothing again
    assert rep.counts["failed"] == 2, (rep.counts, rep.failed)
    assert [f.reason for f in rep.failed] == ["bad_row", "bad_row"]
    assert [f.message for f in rep.failed] == [
        f"{tmp_path / 'm.jsonl'}: row 2: not valid JSON (Expecting value: line 1 column 1 (char 0))",
        f"{tmp_path / 'm.jsonl'}: row 4, column 'image': no image path or URL in column 'image'",
    ]
