"""`clipseek model unpack` on archives as people make them (``tar cf a.tar -C dir .``), malformed ones
(a member inside a file), and oversized ones (limits on total size, member count and compression ratio,
each with an override). Every refusal is a clear error and leaves nothing behind."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from _clipmodels import make
from click.testing import CliRunner

from clipseek import modelfiles as mf
from clipseek.cli.model import model
from clipseek.errors import ModelUnavailable


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make("clip", tmp_path_factory.mktemp("unpack") / "tiny-clip")


def _nothing_left(dest: Path) -> bool:
    return not dest.exists() or not any(dest.iterdir())


def test_tar_of_a_directory_s_contents_unpacks_under_the_archive_name(tiny, tmp_path):  # type: ignore[no-untyped-def]
    arc = tmp_path / "my-clip.tar"
    subprocess.run(["tar", "cf", str(arc), "-C", str(tiny), "."], check=True)  # members "./", "./config.json", ...
    assert "." in tarfile.open(arc).getnames()  # tarfile names the "./" member "."
    d = mf.unpack(arc, tmp_path / "dest", verify=False)
    assert d == tmp_path / "dest" / "my-clip"
    assert mf.fingerprint(d) == mf.fingerprint(tiny)
    # the same for "./top/..." members and a gzip archive of the contents
    arc2 = tmp_path / "other.tgz"
    subprocess.run(["tar", "czf", str(arc2), "-C", str(tiny.parent), "./tiny-clip"], check=True)
    assert mf.unpack(arc2, tmp_path / "dest2", verify=False) == tmp_path / "dest2" / "tiny-clip"


def test_member_inside_a_file_is_a_clear_error(tiny, tmp_path):  # type: ignore[no-untyped-def]
    arc = tmp_path / "bad.tar"
    with tarfile.open(arc, "w") as tar:
        for f in sorted(tiny.iterdir()):
            tar.add(f, arcname=f"m/{f.name}")
        info = tarfile.TarInfo("m/config.json/inner.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    dest = tmp_path / "dest"
    with pytest.raises(ModelUnavailable, match=r"bad.tar: member 'm/config.json/inner.txt' is inside 'm/config.json', "
                                              r"which is a file in the same archive; nothing was written"):
        mf.unpack(arc, dest, verify=False)
    assert _nothing_left(dest)


def _bomb(path: Path, mib: int) -> Path:
    """A valid model directory plus one file of zeros: compresses to almost nothing."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("m/zeros.bin")
        info.size = mib << 20

        class Zeros(io.RawIOBase):
            def readinto(self, b):  # type: ignore[no-untyped-def]
                b[:] = bytes(len(b))
                return len(b)

        tar.addfile(info, Zeros())
    return path


def test_limits_refuse_before_writing_and_can_be_raised(tiny, tmp_path):  # type: ignore[no-untyped-def]
    arc = _bomb(tmp_path / "bomb.tar.gz", 64)
    assert arc.stat().st_size < (1 << 20)
    dest = tmp_path / "dest"
    with pytest.raises(ModelUnavailable, match=r"bomb.tar.gz would unpack to 64.0 MiB, \d+x its compressed size "
                                              r"\(limit 50x\).*--max-ratio; nothing was written"):
        mf.unpack(arc, dest, verify=False)
    assert _nothing_left(dest)
    with pytest.raises(ModelUnavailable, match=r"bomb.tar.gz would unpack to 64.0 MiB, more than the limit of 10.0 MiB "
                                              r"\(--max-size\); nothing was written"):
        mf.unpack(arc, dest, verify=False, limits=mf.UnpackLimits(max_bytes=10 << 20, max_ratio=None))
    assert _nothing_left(dest)
    many = tmp_path / "many.tar"
    with tarfile.open(many, "w") as tar:
        for i in range(30):
            tar.addfile(tarfile.TarInfo(f"m/f{i}"), io.BytesIO(b""))
    with pytest.raises(ModelUnavailable, match=r"many.tar has more than 20 members \(--max-members\); nothing was written"):
        mf.unpack(many, dest, verify=False, limits=mf.UnpackLimits(max_members=20))
    assert _nothing_left(dest)
    # raised limits: the archive is extracted (and then found not to be a model: still nothing left, not even
    # the directories unpack created on the way)
    deep = tmp_path / "new" / "models"
    with pytest.raises(ModelUnavailable, match=r"bomb.tar.gz does not hold a usable model: m: the tokenizer files are "
                                              r"missing .*; nothing was written"):
        mf.unpack(arc, deep, verify=False, limits=mf.UnpackLimits(max_ratio=None))
    assert not (tmp_path / "new").exists()


def test_not_enough_disk_space_is_said_before_writing(tiny, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    import shutil

    arc = tmp_path / "m.tar"
    mf.pack(tiny, arc)
    need = sum(f.stat().st_size for f in tiny.iterdir())
    monkeypatch.setattr(mf.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, (1 << 40) - 4096, 4096))
    with pytest.raises(ModelUnavailable, match=rf"m.tar unpacks to {need / (1 << 20):.1f} MiB but only 0.0 MiB is free "
                                              rf"under {tmp_path / 'dest'}; nothing was written"):
        mf.unpack(arc, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_cli_limit_options(tiny, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CLIPSEEK_HOME", str(tmp_path / "home"))
    arc = _bomb(tmp_path / "bomb.tar.gz", 16)
    r = CliRunner()
    res = r.invoke(model, ["unpack", str(arc), "--no-verify", "--max-size", "8M", "--max-ratio", "0"])
    assert res.exit_code == 1 and "Error: " in res.output and "more than the limit of 8.0 MiB (--max-size)" in res.output
    res = r.invoke(model, ["unpack", str(arc), "--no-verify", "--max-size", "lots"])
    assert res.exit_code == 2 and "'lots' is not a size" in res.output
    ok = tmp_path / "ok.tar"
    mf.pack(tiny, ok)
    res = r.invoke(model, ["unpack", str(ok), "--max-members", "100", "--max-size", "1G"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "home" / "models" / "tiny-clip" / "config.json").is_file()
