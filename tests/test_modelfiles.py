"""Model resolution (issue 3's order), pull/pack/unpack with checksums, directory checks and the
`clipseek model` / `clipseek classify` commands. The hub is never reached: its cache is laid out by
hand, `snapshot_download` is replaced where a download is simulated, and 'the hub' is a local socket."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path

import pytest
from _clipmodels import make, photo_files
from click.testing import CliRunner

from clipseek import modelfiles as mf
from clipseek.cli.classify import classify
from clipseek.cli.model import model
from clipseek.encoders.hf import HFClipEncoder
from clipseek.errors import ModelUnavailable, UnknownPlugin
from clipseek.plugins import get_registry


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make("clip", tmp_path_factory.mktemp("mf") / "tiny-clip")


@pytest.fixture
def env(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A fresh CLIPSEEK_HOME and HF cache; the hub offline unless a test says otherwise."""
    monkeypatch.setenv("CLIPSEEK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _fake_hub_cache(root: Path, hub_id: str, src: Path, rev: str = "0123abcd") -> Path:
    base = root / ("models--" + hub_id.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    snap = base / "snapshots" / rev
    shutil.copytree(src, snap)
    return snap


class _Hub:
    """A local HTTP server standing in for the hub (answers every GET with 200 '[]')."""

    def __enter__(self) -> str:
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # type: ignore[no-untyped-def]
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"[]")

            def log_message(self, *a):  # type: ignore[no-untyped-def]
                pass

        self.srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.srv.server_address[1]}"

    def __exit__(self, *a: object) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def test_resolution_order(env, tiny, monkeypatch):  # type: ignore[no-untyped-def]
    said: list[str] = []
    assert mf.resolve_default_model("my-model", notify=said.append) == "my-model"  # 1. configured
    # 4. nothing local, HF_HUB_OFFLINE=1 -> offline, with one line on how to get the better one
    assert mf.resolve_default_model(None, notify=said.append) == "offline"
    assert len(said) == 1 and "HF_HUB_OFFLINE" in said[0] and "clipseek model pull clip-vit-b32" in said[0]
    # 2. a default preset in the hub cache
    _fake_hub_cache(env / "hfcache", "OFA-Sys/chinese-clip-vit-base-patch16", tiny)
    assert mf.resolve_default_model(None, notify=said.append) == "chinese-clip-vit-b16"
    # ... and clipseek's own model directory wins the order of DEFAULT_ORDER
    shutil.copytree(tiny, env / "home" / "models" / "clip-vit-b32")
    assert mf.resolve_default_model(None, notify=said.append) == "clip-vit-b32"
    assert len(said) == 1


def test_download_when_the_hub_answers_else_offline_quickly(env, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    got: list[str] = []
    with _Hub() as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        assert mf.resolve_default_model(None, download_fn=lambda n: got.append(n) or Path("."), notify=got.append) == "clip-vit-b32"
    assert got == ["clip-vit-b32"]
    # a hub that accepts connections but never answers: offline after the timeout, not a hang
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    said: list[str] = []
    t = time.monotonic()
    assert mf.resolve_default_model(None, timeout=0.5, notify=said.append) == "offline"
    assert time.monotonic() - t < 5 and "did not answer within 0.5 s" in said[0]
    sock.close()


def test_preset_and_hub_id_load_from_the_hub_cache(env, tiny):  # type: ignore[no-untyped-def]
    _fake_hub_cache(env / "hfcache", "openai/clip-vit-base-patch32", tiny)
    for spec in ("clip-vit-b32", "openai/clip-vit-base-patch32"):
        enc = get_registry().make_encoder(spec)
        assert enc.model_id == "openai/clip-vit-base-patch32" and enc.info.dim == 24  # from the files, not the preset
        assert enc.embed_texts(["a photo of a cat"]).shape == (1, 24)
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE"):
        _ = get_registry().make_encoder("someone/not-cached").info


def test_pull_writes_a_directory_that_knows_its_hub_id(env, tiny, monkeypatch):  # type: ignore[no-untyped-def]
    import huggingface_hub

    def fake_snapshot_download(repo_id, local_dir=None, **kw):  # type: ignore[no-untyped-def]
        shutil.copytree(tiny, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE is set"):
        mf.pull("clip-vit-b32")
    with pytest.raises(UnknownPlugin, match="unknown model preset"):
        mf.pull("clip-vit-b99")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with _Hub() as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        res = CliRunner().invoke(model, ["pull", "clip-vit-b32"])
    assert res.exit_code == 0, res.output
    d = env / "home" / "models" / "clip-vit-b32"
    assert json.loads((d / mf.MARKER).read_text())["hub_id"] == "openai/clip-vit-base-patch32"
    assert not (d / ".cache").exists()
    enc = HFClipEncoder(str(d))
    assert enc.model_id == "openai/clip-vit-base-patch32" and enc.preset.name == "clip-vit-b32"
    # the preset name now finds it without the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert get_registry().make_encoder("clip-vit-b32").model_dir == d.resolve()


def test_pack_unpack_round_trip_and_checksum(env, tiny):  # type: ignore[no-untyped-def]
    arc, digest = mf.pack(tiny, env / "out" / "tiny.tar.gz")
    assert (env / "out" / "tiny.tar.gz.sha256").read_text().split() == [digest, "tiny.tar.gz"]
    dest = env / "airgap"
    d = mf.unpack(arc, dest)
    assert d == dest / "tiny-clip"
    assert mf.fingerprint(d) == mf.fingerprint(tiny)
    assert HFClipEncoder(str(d)).version == HFClipEncoder(str(tiny)).version
    with pytest.raises(ModelUnavailable, match="already exists"):
        mf.unpack(arc, dest)
    # a damaged archive: clear error, nothing written
    bad = env / "bad.tar.gz"
    data = bytearray(arc.read_bytes())
    data[len(data) // 2] ^= 0x55
    bad.write_bytes(bytes(data))
    shutil.copy(str(arc) + ".sha256", str(bad) + ".sha256")
    dest2 = env / "airgap2"
    with pytest.raises(ModelUnavailable, match="checksum mismatch.*Nothing was written"):
        mf.unpack(bad, dest2)
    assert not dest2.exists() or not any(dest2.iterdir())
    (env / "bad.tar.gz.sha256").unlink()
    with pytest.raises(ModelUnavailable, match="no checksum file"):
        mf.unpack(bad, dest2)


def test_unpack_refuses_unsafe_or_incomplete_archives(env, tiny):  # type: ignore[no-untyped-def]
    evil = env / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(tiny / "config.json", arcname="../escape.json")
    with pytest.raises(ModelUnavailable, match="unsafe"):
        mf.unpack(evil, env / "x", verify=False)
    partial = env / "partial.tar"
    with tarfile.open(partial, "w") as tar:
        tar.add(tiny / "config.json", arcname="m/config.json")
        tar.add(tiny / "tokenizer.json", arcname="m/tokenizer.json")
    with pytest.raises(ModelUnavailable, match="weights file is missing"):
        mf.unpack(partial, env / "y", verify=False)
    assert not (env / "y" / "m").exists() and not (env / "escape.json").exists()


def test_model_cli_list_export_pack_unpack(env, tiny, tmp_path):  # type: ignore[no-untyped-def]
    r = CliRunner()
    d = tmp_path / "m"
    shutil.copytree(tiny, d)
    res = r.invoke(model, ["list", "--json"])
    assert res.exit_code == 0 and [p["name"] for p in json.loads(res.output)["presets"]][0] == "clip-vit-b32"
    res = r.invoke(model, ["export", str(d), "--int8", "--default", "int8"])
    assert res.exit_code == 0, res.output
    assert re.search(r"fp32 cosine to torch >= (0\.9999|1\.0000)", res.output), res.output
    assert HFClipEncoder(str(d)).runtime() == "onnx-int8"
    res = r.invoke(model, ["pack", str(d), str(tmp_path / "m.tar")])
    assert res.exit_code == 0, res.output
    res = r.invoke(model, ["unpack", str(tmp_path / "m.tar")])
    assert res.exit_code == 0, res.output
    assert (env / "home" / "models" / "m" / "onnx" / "image.int8.onnx").is_file()
    res = r.invoke(model, ["list"])
    assert "+onnx" in res.output
    res = r.invoke(model, ["unpack", str(tmp_path / "nothing.tar")])
    assert res.exit_code == 1 and "Error:" in res.output and "does not exist" in res.output


def test_classify_command(env, tiny):  # type: ignore[no-untyped-def]
    imgs = photo_files(2)
    res = CliRunner().invoke(classify, [*imgs, "--labels", "cat,dog，汽车", "--model", str(tiny), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["labels"] == ["cat", "dog", "汽车"] and len(out["results"]) == 2
    assert abs(sum(out["results"][0]["probs"].values()) - 1) < 1e-4
    res = CliRunner().invoke(classify, [imgs[0], "--labels", "cat", "--model", str(tiny)])
    assert res.exit_code == 1 and "at least two labels" in res.output
