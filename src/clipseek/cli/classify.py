"""``clipseek classify``: zero-shot labels for image files (needs no collection)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..errors import BadImage, ClipseekError
from ..images import load_image
from ._util import fail_clean


@click.command("classify")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", required=True, help="Candidate labels, comma separated: cat,dog,car or 猫,狗,汽车.")
@click.option("--model", "model_spec", default=None, help="Preset, hub id or model directory [default: resolved].")
@click.option("--template", "templates", multiple=True, help="Prompt template(s) with {} for the label.")
@click.option("--lang", type=click.Choice(["en", "zh"]), default=None, help="Template language [default: per label].")
@click.option("--top", default=3, show_default=True, help="Labels to show per image.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with every label's probability.")
@fail_clean
def classify(images: tuple[str, ...], labels: str, model_spec: str | None, templates: tuple[str, ...],
             lang: str | None, top: int, as_json: bool) -> None:
    """Zero-shot labels for IMAGES: softmax over --labels with the model's prompt templates."""
    from .. import zeroshot
    from ..modelfiles import resolve_default_model
    from ..plugins import get_registry

    labs = zeroshot.parse_labels(labels)
    if len(labs) < 2:
        raise ClipseekError("give at least two labels (--labels cat,dog)")
    spec = resolve_default_model(model_spec, notify=lambda m: click.echo(m, err=True))
    enc = get_registry().make_encoder(spec)
    # A bad image is reported and skipped; the others are still classified.
    loaded, failed = [], []
    for p in images:
        try:
            loaded.append((p, load_image(p)))
        except BadImage as e:
            failed.append((p, str(e).removeprefix(f"{p}: ")))
    try:
        probs = (
            zeroshot.classify(enc, [img for _, img in loaded], labs, templates=list(templates) or None, lang=lang)
            if loaded
            else []
        )
    finally:
        enc.close()
    if as_json:
        results: list[dict[str, Any]] = [
            {"image": name, "probs": {lab: round(float(p), 6) for lab, p in zip(labs, row)},
             "top": [lab for lab, _ in zeroshot.top_labels(row[None], labs, top)[0]]}
            for (name, _), row in zip(loaded, probs)
        ]
        results += [{"image": name, "error": why} for name, why in failed]
        click.echo(json.dumps({"model": enc.spec, "labels": labs, "results": results}, ensure_ascii=False, indent=2))
    else:
        for (name, _), row in zip(loaded, probs):
            best = ", ".join(f"{lab} {p:.1%}" for lab, p in zeroshot.top_labels(row[None], labs, top)[0])
            click.echo(f"{name}: {best}")
        for name, why in failed:
            click.echo(f"{name}: skipped: {why}", err=True)
    if failed:
        sys.exit(1)
