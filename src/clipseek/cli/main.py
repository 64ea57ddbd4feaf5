"""The ``clipseek`` command line. Each command parses its options and makes one Engine call."""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
import unicodedata
from pathlib import Path
from typing import Any

import click

from ..engine import DEFAULT_COLLECTION, Engine, SearchResult
from ..errors import ClipseekError
from ..ingest import Dedup
from ._util import fail_clean, proxy_option


class _Ctx:
    def __init__(self, data_dir: str | None) -> None:
        self.data_dir = data_dir
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.data_dir)
        return self._engine


collection_option = click.option(
    "-c",
    "--collection",
    default=DEFAULT_COLLECTION,
    show_default=True,
    help="Collection name.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipseek")
@click.option(
    "--data-dir",
    envvar="CLIPSEEK_HOME",
    type=click.Path(file_okay=False),
    help="Where collections live [env CLIPSEEK_HOME; default ~/.local/share/clipseek].",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """clipseek: self-hosted image search. Index photos, then find them with words
    (English or Chinese), with another photo, or with a vector.

    \b
    Quick start:
      clipseek demo                       index sample photos and run example queries
      clipseek index ~/Pictures -c photos
      clipseek search "a red car" -c photos
      clipseek search "白色的猫" -c photos --json
      clipseek search --image query.jpg -c photos --grid results.png
    """
    ctx.obj = _Ctx(data_dir)
    ctx.call_on_close(lambda: ctx.obj._engine.close() if ctx.obj._engine else None)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@collection_option
@click.option(
    "--model",
    default=None,
    help="Model for a new collection: a preset (see `clipseek model list`), a hub id, a model directory or "
    "'offline' [default: $CLIPSEEK_MODEL, else a CLIP preset found locally or downloadable, else offline].",
)
@click.option("--store", default=None, help="Store for a new collection (see `clipseek stores`) [default: local].")
@click.option(
    "--store-uri",
    default=None,
    help="Where a new collection's store lives, e.g. http://milvus:19530 for --store milvus "
    "[default: env CLIPSEEK_MILVUS_URI, the configuration file, else http://localhost:19530]; remembered by the collection.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Images per encoder batch.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Image decoding threads; with --ray, worker actors [default: CPU count; of the cluster with --ray].")
@click.option(
    "--labels",
    help="Zero-shot label every image with the most probable of these comma-separated labels "
    "(English or Chinese), stored as metadata 'labels' and 'label_probs' (filter with -w labels=cat).",
)
@click.option("--label-top", type=click.IntRange(1, 100), default=1, show_default=True, help="Labels kept per image.")
@click.option(
    "--label-min-prob", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Keep labels at least this probable."
)
@click.option(
    "--dedup",
    type=click.Choice(["keep", "skip"]),
    default="keep",
    show_default=True,
    help="Exact duplicates (same bytes): index each (keep), or index one and list the other paths "
    "in its metadata 'duplicates' (skip).",
)
@click.option("--prune", is_flag=True, help="Also delete the records of files gone from the folders indexed.")
@click.option(
    "--allow-private-urls",
    is_flag=True,
    default=None,
    help="Let URL items reach loopback, link-local or private addresses [env CLIPSEEK_ALLOW_PRIVATE_URLS=1].",
)
@proxy_option("URL items")
@click.option(
    "--keep-downloads/--no-keep-downloads",
    default=True,
    show_default=True,
    help="Keep downloaded originals in the collection (for grids), or delete each once it is indexed.",
)
@click.option(
    "--download-concurrency", type=click.IntRange(1, 256), default=16, show_default=True, help="Parallel URL downloads."
)
@click.option(
    "--max-download-mb", type=click.FloatRange(0, min_open=True), default=50.0, show_default=True,
    help="Largest download accepted, in MB.",
)
@click.option("--image-column", help="Manifest column holding the image path or URL [default: image, path, url, image_url or file].")
@click.option("--caption-column", help="Manifest column holding the caption, stored as 'caption' [default: caption or text].")
@click.option("--id-column", help="Manifest column holding the record id [default: id; else the path, else the URL].")
@click.option(
    "--failures",
    "failures_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write every skipped item to this JSON Lines file (id, source, reason key, message).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Load and encode on a Ray cluster (ADDRESS: auto, ray://host:10001; none: a new local one); "
    "this process writes the store. Needs the [ray] extra; give it after the paths or as --ray=ADDRESS.",
)
@click.option(
    "--ray-plugin",
    "ray_plugins",
    multiple=True,
    metavar="MODULE",
    help="A module the Ray workers register as a clipseek plugin (encoders not installed as entry points).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
@fail_clean
def index(
    obj: _Ctx,
    paths: tuple[str, ...],
    collection: str,
    model: str | None,
    store: str | None,
    store_uri: str | None,
    batch_size: int | None,
    workers: int | None,
    labels: str | None,
    label_top: int,
    label_min_prob: float,
    dedup: Dedup,
    prune: bool,
    allow_private_urls: bool | None,
    proxy: str | None,
    keep_downloads: bool,
    download_concurrency: int,
    max_download_mb: float,
    image_column: str | None,
    caption_column: str | None,
    id_column: str | None,
    failures_file: str | None,
    ray_address: str | None,
    ray_plugins: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Index image files and folders (recursive; jpg png webp bmp gif tiff; hidden files skipped),
    or manifests: .csv .tsv .parquet .jsonl .json, .txt lists of paths or URLs, `-` for stdin,
    Hugging Face datasets saved to disk, WebDataset .tar shards (or a folder of them).

    Re-running adds only new or changed items (a moved or renamed file reuses its stored vector);
    items that cannot be read are reported (by reason) and skipped. The exit status is 0 when the
    job ran, even with skipped items.
    """
    from tqdm import tqdm

    from ..ingest import IngestReport
    from ..manifest import Columns

    columns = Columns(image=image_column, caption=caption_column, id=id_column)
    col = obj.engine.collection(collection, model=model, store=store, store_uri=store_uri)
    reports = []
    _interrupt_on_sigterm()
    for p in paths:
        bar = tqdm(desc=f"indexing {p}", unit="img", disable=quiet, file=sys.stderr, dynamic_ncols=True)
        rep = IngestReport()
        try:
            col.index(
                p,
                batch_size=batch_size,
                workers=workers,
                on_progress=functools.partial(_advance, bar, rep),
                on_total=functools.partial(_set_total, bar),
                labels=labels,
                label_top=label_top,
                label_min_prob=label_min_prob,
                dedup=dedup,
                prune=prune,
                allow_private_urls=allow_private_urls or None,
                proxy=proxy,
                keep_downloads=keep_downloads,
                download_concurrency=download_concurrency,
                max_download_mb=max_download_mb,
                columns=columns,
                report=rep,
                ray=ray_address,
                ray_plugins=ray_plugins,
            )
        finally:
            bar.close()
        reports.append((p, rep))
    if failures_file:
        _write_failures(failures_file, reports)
    if as_json:
        out = {"collection": collection, "count": col.count(), "sources": [{"path": p, **r.to_dict()} for p, r in reports]}
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    for p, rep in reports:
        click.echo(f"{p}: {rep.summary()}")
        for f in rep.failed[:50]:
            click.echo(f"  skipped {f[0]}: {f[1]}")
        if len(rep.failed) > 50:
            click.echo(f"  ... and {len(rep.failed) - 50} more (use --failures FILE.jsonl or --json for the full list)")
        if rep.repeated_ids:
            shown = "; ".join(f"{i} (rows {', '.join(map(str, rows))})" for i, rows in rep.repeated_ids[:10])
            more = f"; ... and {len(rep.repeated_ids) - 10} more" if len(rep.repeated_ids) > 10 else ""
            click.echo(f"  {len(rep.repeated_ids)} ids appear more than once; the last row wins: {shown}{more}")
    if failures_file:
        click.echo(f"skipped items written to {failures_file}")
    click.echo(f"collection {collection!r} now holds {col.count()} images")


def _advance(bar: Any, report: Any, n: int) -> None:
    """Move the bar and show the live counters (encoded, unchanged, failed; downloaded for URLs)."""
    bar.update(n)
    bar.set_postfix(report.counts, refresh=False)


def _write_failures(path: str, reports: list[tuple[str, Any]]) -> None:
    """Every skipped item as one JSON object per line (id, source, reason, message)."""
    from ..failures import Failure

    tmp = Path(path + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for _, rep in reports:
            for f in rep.failed:
                out.write(json.dumps(Failure(*f).to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def _interrupt_on_sigterm() -> None:
    """Make SIGTERM (kill, systemd, docker stop) stop an index run the way Ctrl-C does: the
    records already encoded are committed, so a re-run resumes after them."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # signals can only be set there
        signal.signal(signal.SIGTERM, interrupt)


def _set_total(bar: Any, n: int) -> None:
    bar.total = n
    bar.refresh()


def _print_result(res: SearchResult) -> None:
    q = res.query
    what = q.get("text") or q.get("image") or q.get("like") or "vector"
    click.echo(
        f"{len(res.hits)} results for {q['kind']} query {what!r} in {res.collection!r} "
        f"({res.took_ms:.0f} ms: encode {res.encode_ms:.0f}, search {res.search_ms:.1f})"
    )
    if not res.hits:
        return
    click.echo(f"{'rank':>4}  {'score':>5}  {'cosine':>6}  id")
    for i, h in enumerate(res.hits, 1):
        click.echo(f"{i:>4}  {h.score:5.2f}  {h.cosine:6.3f}  {_escape(h.id)}")


def _escape(text: str) -> str:
    """One table row per hit: control characters in an id (a newline in a file name) are shown
    escaped (backslash-n), other characters, Chinese included, as they are."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch).startswith("C") else ch for ch in text
    )


@cli.command()
@click.argument("text", required=False)
@collection_option
@click.option("--image", help="Search by an image: a file path or an http(s) URL.")
@click.option("--like", help="Search by a record already in the collection (its id or file path); it is excluded.")
@click.option("--vector", help="Search by a raw vector: a JSON list, or @file.npy / @file.json.")
@click.option("-n", "--top", type=click.IntRange(1, 10000), default=10, show_default=True, help="How many results.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    help="Minimum calibrated score (0-1; 0.5 means 'probably a real match' for this model and query kind).",
)
@click.option("--min-cosine", type=float, help="Minimum raw cosine similarity (model-specific scale).")
@click.option(
    "-w",
    "--where",
    multiple=True,
    help="Metadata filter, repeatable (AND): FIELD=VALUE, 'FIELD in A,B', FIELD>=VALUE, FIELD<VALUE ... "
    "Times as ISO-8601 (2024-05-01T08:00).",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON (ids, scores, metadata).")
@click.option("--grid", type=click.Path(dir_okay=False), help="Also write the results as a picture grid (PNG).")
@click.option(
    "--allow-private-urls",
    is_flag=True,
    default=None,
    help="Let an --image URL reach loopback, link-local or private addresses [env CLIPSEEK_ALLOW_PRIVATE_URLS=1].",
)
@proxy_option("an --image URL")
@click.pass_obj
@fail_clean
def search(
    obj: _Ctx,
    text: str | None,
    collection: str,
    image: str | None,
    like: str | None,
    vector: str | None,
    top: int,
    threshold: float | None,
    min_cosine: float | None,
    where: tuple[str, ...],
    as_json: bool,
    grid: str | None,
    allow_private_urls: bool | None,
    proxy: str | None,
) -> None:
    """Find the images most similar to a TEXT, an --image, a record (--like) or a --vector."""
    vec = _read_vector(vector) if vector is not None else None
    col = obj.engine.open(collection, read_only=True)
    res = col.search(
        text,
        image=image,
        like=like,
        vector=vec,
        top=top,
        where=list(where),
        threshold=threshold,
        min_cosine=min_cosine,
        allow_private_urls=allow_private_urls or None,
        proxy=proxy,
    )
    if as_json:
        click.echo(res.to_json())
    else:
        _print_result(res)
    if grid:
        from ..grid import render_grid

        title = text or (f"like {like}" if like else f"image {image}" if image else "vector query")
        out = render_grid(res.hits, grid, title=title, query_image=res.query_image)
        click.echo(f"grid written to {out}", err=as_json)


def _read_vector(spec: str) -> Any:
    import numpy as np

    from ..errors import BadVector

    try:
        if spec.startswith("@"):
            p = Path(spec[1:])
            return np.load(p) if p.suffix == ".npy" else json.loads(p.read_text())
        return json.loads(spec)
    except (OSError, ValueError) as e:
        raise BadVector(f"cannot read vector {spec[:40]!r}: {e}") from None


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
@fail_clean
def info(obj: _Ctx, name: str | None, as_json: bool) -> None:
    """Show collections: model, store, size on disk, record count and filterable fields."""
    eng = obj.engine
    if name:
        infos = [eng.open(name, read_only=True).info()]
    else:  # one damaged collection must not hide the others: list it with its error
        infos = [_info_or_error(eng, n) for n in eng.names()]
    if as_json:
        click.echo(json.dumps(infos if not name else infos[0], ensure_ascii=False, indent=2))
        return
    if not infos:
        click.echo(f"no collections in {eng.data_dir}; create one with `clipseek index PATH -c NAME`")
        return
    for i in infos:
        if "error" in i:
            click.echo(f"{i['name']}: DAMAGED: {i['error']} (see `clipseek check -c {i['name']}`)")
            continue
        m = i["model"]
        click.echo(
            f"{i['name']}: {i['count']} images, model {m['name']} ({m['model_id']}, {m['dim']}-d), "
            f"store {i['store']}, {i['disk_bytes'] / 1e6:.1f} MB"
        )
        if name:
            click.echo(f"  path: {i['path']}\n  created: {i['created_at']}\n  fields: {', '.join(i['fields'])}")
            click.echo(f"  last indexed: {_last_run_line(i.get('last_run'))}")


def _last_run_line(run: dict[str, Any] | None) -> str:
    if not run:
        return "never"
    reasons = ", ".join(f"{k} {n}" for k, n in run.get("failed_by_reason", {}).items())
    line = (
        f"{run['finished_at']} from {run['source']}: {run['added']} added, {run['updated']} updated, "
        f"{run['unchanged']} unchanged, {run['failed']} failed" + (f" ({reasons})" if reasons else "")
    )
    return line if run.get("completed", True) else line + " (interrupted)"


def _info_or_error(eng: Engine, name: str) -> dict[str, Any]:
    try:
        return eng.open(name, read_only=True).info()
    except ClipseekError as e:
        return {"name": name, "error": str(e)}


@cli.command()
@collection_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def check(obj: _Ctx, collection: str, as_json: bool) -> None:
    """Verify a collection (database integrity, vector norms, the ANN index); exit 1 when damaged."""
    try:
        report = obj.engine.open(collection, read_only=True).check()
    except ClipseekError as e:  # a collection too damaged to open is a finding, not a failure of check
        report = {"name": collection, "ok": False, "records": None, "problems": [{"problem": str(e)}]}
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        count = "" if report["records"] is None else f" ({report['records']} records)"
        click.echo(f"collection {collection!r}{count}: {'OK' if report['ok'] else 'DAMAGED'}")
        for p in report["problems"]:
            where = f"{p['file']}: " if p.get("file") else ""
            click.echo(f"  {where}{p['problem']}" + (f"; fix: {p['fix']}" if p.get("fix") else ""))
            if p.get("ids"):
                click.echo("    " + "\n    ".join(p["ids"]))
    if not report["ok"]:
        sys.exit(1)


@cli.command()
@collection_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
@fail_clean
def repair(obj: _Ctx, collection: str, as_json: bool) -> None:
    """Rebuild a collection's derived data (ANN index, filter columns); list records whose vectors
    are damaged so they can be re-indexed (they are set aside, never silently dropped)."""
    report = obj.engine.open(collection).repair()
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    click.echo(f"collection {collection!r}: rebuilt {', '.join(report['rebuilt']) or 'nothing'}; {report['records']} records")
    if report["set_aside"]:
        click.echo(f"{len(report['set_aside'])} records had damaged vectors and were set aside; re-index them:")
        click.echo("  " + "\n  ".join(report["set_aside"]))


@cli.command()
@click.argument("ids", nargs=-1)
@collection_option
@click.option("-w", "--where", multiple=True, help="Delete the records matching this filter (repeatable, AND).")
@click.option("--all", "drop", is_flag=True, help="Delete the whole collection.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation with --all.")
@click.pass_obj
@fail_clean
def delete(obj: _Ctx, ids: tuple[str, ...], collection: str, where: tuple[str, ...], drop: bool, yes: bool) -> None:
    """Delete records by id or by filter, or a whole collection with --all."""
    eng = obj.engine
    if drop:
        if ids or where:
            raise click.UsageError("--all deletes the whole collection; do not give ids or --where with it")
        if not eng.exists(collection):
            eng.open(collection)  # raises the usual 'no collection' error
        if not yes:
            click.confirm(f"Delete collection {collection!r} and all its records?", abort=True)
        eng.drop(collection)
        click.echo(f"collection {collection!r} deleted")
        return
    if not ids and not where:
        raise click.UsageError("give record ids, --where filters, or --all")
    col = eng.open(collection)
    n = col.delete(ids, where=list(where) or None)
    missing = len(ids) - n if not where else 0
    click.echo(f"deleted {n} records from {collection!r}" + (f" ({missing} ids not found)" if missing > 0 else ""))


@cli.command()
@click.pass_obj
def stores(obj: _Ctx) -> None:
    """List the vector stores that are installed."""
    from ..plugins import get_registry

    for name, cls in sorted(get_registry().stores.items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        click.echo(f"{name}: {doc[0] if doc else ''}")


@cli.command()
@collection_option
@click.option("--out", type=click.Path(file_okay=False), default="clipseek-demo", show_default=True, help="Where to write the result grids.")
@click.pass_obj
@fail_clean
def demo(obj: _Ctx, collection: str, out: str) -> None:
    """Index the sample photos that ship with scikit-image and scikit-learn, then search them
    by English and Chinese text and by an image; print the results and write picture grids."""
    from ..demo import run_demo

    run_demo(obj.engine, collection=None if collection == DEFAULT_COLLECTION else collection, out_dir=Path(out), echo=click.echo)


def _attach_commands() -> None:
    from .classify import classify
    from .dedup import dedup
    from .migrate import migrate
    from .model import model
    from .serve import keys, serve

    cli.add_command(model)
    cli.add_command(serve)
    cli.add_command(keys)
    cli.add_command(classify)
    cli.add_command(dedup)
    cli.add_command(migrate)


_attach_commands()


def main() -> None:
    cli(prog_name="clipseek")
