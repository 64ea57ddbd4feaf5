"""``clipseek model ...``: a standalone click group attached to the main one. It needs no ``--data-dir``:
models live in ``$CLIPSEEK_HOME/models`` (see :mod:`clipseek.modelfiles`).

\b
  clipseek model list                          presets and local models
  clipseek model pull clip-vit-b32 [--dir D]   download a preset or hub id into a directory
  clipseek model export DIR [--int8]           write ONNX towers (fp32, + int8) into DIR/onnx
  clipseek model pack DIR model.tar            one archive + model.tar.sha256 for an air-gapped machine
  clipseek model unpack model.tar [--dir D]    verify the checksum, then extract (size limits: --max-*)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from ..modelfiles import DownloadBounds, UnpackLimits
from ._util import fail_clean


@click.group("model")
def model() -> None:
    """Get, convert and move CLIP-family models (presets, hub ids, directories)."""


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_clean
def list_cmd(as_json: bool) -> None:
    """Presets clipseek knows and models found on this machine."""
    from .. import modelfiles as mf
    from ..encoders.presets import PRESETS

    local = mf.list_local()
    if as_json:
        click.echo(json.dumps({"presets": [p.to_dict() for p in PRESETS.values()], "local": local,
                               "models_dir": str(mf.models_dir())}, ensure_ascii=False, indent=2))
        return
    from ..plugins import get_registry

    click.echo("Encoders (what --model accepts besides presets, hub ids and directories):")
    for name, cls in sorted(get_registry().encoders.items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        click.echo(f"  {name:30s} {doc[0] if doc else ''}")
    click.echo("Presets:")
    for p in PRESETS.values():
        have = "local" if mf.find_local(p.name) else "not downloaded"
        click.echo(f"  {p.name:30s} {p.dim:4d}-d  {p.hub_id:45s} {have}")
        click.echo(f"  {'':30s} {p.description}")
    click.echo(f"Local models in {mf.models_dir()}:" if local else f"No local models in {mf.models_dir()}.")
    for m in local:
        click.echo(f"  {m['name']:30s} {m['status']:18s} {m['path']}")


@model.command("pull")
@click.argument("name")
@click.option("--dir", "dest", type=click.Path(file_okay=False), default=None,
              help="Target directory [default: $CLIPSEEK_HOME/models/NAME].")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=DownloadBounds().stall_s,
              show_default=True, help="Give up when nothing arrives for this many seconds.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=DownloadBounds().deadline_s,
              show_default=True, help="Give up when the download takes longer than this many seconds.")
@fail_clean
def pull_cmd(name: str, dest: str | None, stall_timeout: float, deadline: float) -> None:
    """Download preset or hub id NAME into a directory (needs the hub)."""
    from .. import modelfiles as mf

    path = mf.pull(name, dest, bounds=DownloadBounds(stall_s=stall_timeout, deadline_s=deadline))
    click.echo(f"{name} -> {path}")
    click.echo(f"Use it with --model {name if dest is None else path}; make it fast with `clipseek model export {path}`.")


@model.command("export")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--int8/--no-int8", default=True, show_default=True, help="Also write int8 (dynamically quantised) towers.")
@click.option("--default", "default", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="Which precision the encoder uses when it finds this export.")
@fail_clean
def export_cmd(model_dir: str, int8: bool, default: str) -> None:
    """Write MODEL_DIR's image and text towers to ONNX (MODEL_DIR/onnx)."""
    from ..encoders.onnx_export import export

    man = export(model_dir, int8=int8, default=default, progress=lambda m: click.echo(m, err=True))
    par = man["parity"]
    click.echo(f"wrote {Path(model_dir) / 'onnx'}: fp32 cosine to torch >= "
               f"{min(par['fp32_min_cosine'].values()):.6f}"
               + (f"; int8 >= {min(par['int8_min_cosine'].values()):.4f}" if "int8_min_cosine" in par else ""))


@model.command("pack")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("archive", type=click.Path(dir_okay=False))
@fail_clean
def pack_cmd(model_dir: str, archive: str) -> None:
    """Pack MODEL_DIR into ARCHIVE (.tar, or .tar.gz) and write ARCHIVE.sha256."""
    from .. import modelfiles as mf

    out, digest = mf.pack(model_dir, archive)
    click.echo(f"{out}  sha256 {digest}  (checksum in {out.name}.sha256)")


class Size(click.ParamType):
    """A byte count: ``300M``, ``1.5G``, ``64GiB`` or plain bytes."""

    name = "size"
    UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(value), re.IGNORECASE)
        if not m:
            self.fail(f"{value!r} is not a size (e.g. 300M, 1.5G, 64G)", param, ctx)
        return int(float(m.group(1)) * self.UNITS[m.group(2).upper()])


_DEFAULT_LIMITS = UnpackLimits()


@model.command("unpack")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--dir", "dest", type=click.Path(file_okay=False), default=None,
              help="Where to extract [default: $CLIPSEEK_HOME/models].")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check (not recommended).")
@click.option("--overwrite", is_flag=True, help="Replace an existing model directory of the same name.")
@click.option("--max-size", type=Size(), default=f"{(_DEFAULT_LIMITS.max_bytes or 0) >> 30}G", show_default=True,
              help="Refuse an archive that unpacks to more than this (0: no limit).")
@click.option("--max-members", type=click.IntRange(0), default=_DEFAULT_LIMITS.max_members, show_default=True,
              help="Refuse an archive with more files and folders than this (0: no limit).")
@click.option("--max-ratio", type=click.FloatRange(0), default=_DEFAULT_LIMITS.max_ratio, show_default=True,
              help="Refuse an archive that unpacks to more than this multiple of its own size (0: no limit).")
@fail_clean
def unpack_cmd(archive: str, dest: str | None, no_verify: bool, overwrite: bool, max_size: int, max_members: int,
               max_ratio: float) -> None:
    """Verify ARCHIVE against ARCHIVE.sha256 and extract the model directory.

    The limits are checked before anything is written."""
    from .. import modelfiles as mf

    limits = UnpackLimits(max_bytes=max_size or None, max_members=max_members or None, max_ratio=max_ratio or None)
    path = mf.unpack(archive, dest, verify=not no_verify, overwrite=overwrite, limits=limits)
    click.echo(f"{archive} -> {path}")
    click.echo(f"Use it with --model {path}" + (f" (or --model {path.name})" if dest is None else ""))


__all__ = ["model"]
