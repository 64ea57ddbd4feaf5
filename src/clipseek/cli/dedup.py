"""``clipseek dedup``: groups of near-duplicate images already in a collection."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..engine import DEFAULT_COLLECTION
from ..types import Hit
from ._util import fail_clean

if TYPE_CHECKING:
    from .main import _Ctx


@click.command("dedup")
@click.option("-c", "--collection", default=DEFAULT_COLLECTION, show_default=True, help="Collection name.")
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=0.95,
    show_default=True,
    help="Raw cosine two images must reach to count as near duplicates (1: identical vectors).",
)
@click.option(
    "--neighbours",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Nearest records looked at per record (a larger group is still joined through its members).",
)
@click.option("--json", "as_json", is_flag=True, help="Print every group as JSON.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Groups shown in the table.")
@click.option("--grid", type=click.Path(file_okay=False), help="Also write one picture per group into this folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
@fail_clean
def dedup(
    obj: _Ctx, collection: str, threshold: float, neighbours: int, as_json: bool, limit: int, grid: str | None,
    quiet: bool,
) -> None:
    """Group the near-duplicate images of a collection: every record's stored vector is searched in
    the collection (no model needed), and records with cosine >= --threshold are joined into groups,
    largest first. Nothing is deleted."""
    from tqdm import tqdm

    from .main import _escape

    col = obj.engine.open(collection, read_only=True)
    n = col.count()
    bar = tqdm(total=n, desc="dedup", unit="rec", disable=quiet, file=sys.stderr, dynamic_ncols=True)
    try:
        groups = col.near_duplicates(threshold, neighbours=neighbours, on_progress=bar.update)
    finally:
        bar.close()
    written = []
    if grid:
        from ..grid import render_grid

        cal = col.calibration("image")
        for k, g in enumerate(groups, 1):
            hits = [
                Hit(m.id, m.cosine, {"path": m.path} if m.path else {}, float(cal.score(m.cosine)) if cal else m.cosine)
                for m in g.members
            ]
            title = f"group {k}: {len(g.members)} near duplicates (cosine >= {threshold})"
            written.append(str(render_grid(hits, Path(grid) / f"group-{k:04d}.png", title=title)))
    if as_json:
        out = {
            "collection": collection,
            "records": n,
            "threshold": threshold,
            "groups": [g.to_dict() for g in groups],
            "grids": written,
        }
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    dup = sum(len(g.members) for g in groups)
    click.echo(f"{len(groups)} groups of near duplicates (cosine >= {threshold}): {dup} of {n} records")
    for k, g in enumerate(groups[:limit], 1):
        click.echo(f"group {k} ({len(g.members)}):")
        for m in g.members:
            click.echo(f"  {m.cosine:.4f}  {_escape(m.id)}")
    if len(groups) > limit:
        click.echo(f"... and {len(groups) - limit} more groups (use --json for all)")
    if written:
        click.echo(f"{len(written)} grids written to {grid}")
