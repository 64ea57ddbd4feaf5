"""The main job end to end through the CLI, with the real offline model on the shipped photos."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from clipseek.cli import cli

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def demo(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("grids")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # no 3-second hub probe; the offline model is chosen
    mp.setenv("CLIPSEEK_HOME", str(data))
    runner = CliRunner()
    res = runner.invoke(cli, ["demo", "--out", str(out)], catch_exceptions=False)
    yield runner, res, out
    mp.undo()


def test_demo_indexes_and_ranks_the_right_photos(demo) -> None:  # type: ignore[no-untyped-def]
    _, res, out = demo
    assert res.exit_code == 0, res.output
    assert "using the offline model" in res.output
    assert "19 added, 0 updated, 0 unchanged, 0 failed" in res.output
    # the first result line after each query header
    firsts = dict(re.findall(r"\n'(.+?)':\n  1\. (\S+)", res.output))
    assert firsts["a cat"] == "chelsea" and firsts["一只猫"] == "chelsea"
    assert firsts["火箭"] == "rocket" and firsts["a cup of coffee"] == "coffee"
    assert firsts["一杯咖啡"] == "coffee" and firsts["中国的寺庙"] == "china"
    assert re.search(r"image query .*\n  1\. chelsea ", res.output)
    assert sorted(p.name for p in out.iterdir()) == ["image.png"] + [f"text-{i}.png" for i in range(1, 9)]


def test_search_the_demo_collection_as_json_with_filters(demo) -> None:  # type: ignore[no-untyped-def]
    runner = demo[0]
    res = runner.invoke(cli, ["search", "白色的猫", "-c", "demo", "--json", "-n", "3"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["hits"][0]["id"] == "chelsea" and out["hits"][0]["metadata"]["caption"] == "a tabby cat"
    assert out["hits"][0]["score"] > 0.5 > out["hits"][2]["score"]
    res = runner.invoke(cli, ["search", "--like", "chelsea", "-c", "demo", "--json", "-w", "caption in a tabby cat,a motorcycle"])
    assert [h["id"] for h in json.loads(res.output)["hits"]] == ["motorcycle"]


def test_index_with_zero_shot_labels(demo, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from clipseek.samples import sample_photos

    runner = demo[0]
    d = tmp_path / "imgs"
    d.mkdir()
    wanted = {"chelsea": "猫", "coffee": "咖啡", "rocket": "火箭"}
    for sid, path, _ in sample_photos():
        if sid in wanted:
            (d / path.name).write_bytes(path.read_bytes())
    res = runner.invoke(cli, ["index", str(d), "-c", "lab", "--model", "offline", "-q", "--labels", "猫,咖啡,火箭"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["search", "--like", str(d / "chelsea.png"), "-c", "lab", "--json", "-n", "5"])
    labels = {h["metadata"]["file_name"]: h["metadata"]["labels"] for h in json.loads(res.output)["hits"]}
    assert labels == {"coffee.png": ["咖啡"], "rocket.jpg": ["火箭"]}
    res = runner.invoke(cli, ["search", "a cup", "-c", "lab", "--json", "-w", "labels=猫"])
    assert [h["metadata"]["file_name"] for h in json.loads(res.output)["hits"]] == ["chelsea.png"]
