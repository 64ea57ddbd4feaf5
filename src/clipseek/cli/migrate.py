"""``clipseek migrate``: move a collection to another store (local to Milvus and back), verified."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from ..engine import DEFAULT_COLLECTION
from ._util import fail_clean

if TYPE_CHECKING:
    from .main import _Ctx


@click.command("migrate")
@click.option("-c", "--collection", default=DEFAULT_COLLECTION, show_default=True, help="Collection name.")
@click.option("--to", "to", required=True, help="The store to move it to (see `clipseek stores`), e.g. milvus.")
@click.option(
    "--store-uri",
    default=None,
    help="Where that store lives, e.g. http://milvus:19530 [default: env CLIPSEEK_MILVUS_URI, the configuration file, "
    "else http://localhost:19530].",
)
@click.option("--as", "new_name", default=None, help="Copy into a new collection of this name and leave the source as it is.")
@click.option("--batch-size", type=click.IntRange(1, 16384), default=1000, show_default=True, help="Records per write.")
@click.option("--sample", type=click.IntRange(0, 10000), default=20, show_default=True, help="Records and searches compared at the end.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
@fail_clean
def migrate(
    obj: _Ctx,
    collection: str,
    to: str,
    store_uri: str | None,
    new_name: str | None,
    batch_size: int,
    sample: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Copy a collection into another store in batches (its model record, calibration and all
    metadata come along), verify the copy (counts, fields, a sample of records and of searches),
    then switch the collection to it. Interrupted, it resumes where it stopped when run again.

    \b
      clipseek migrate -c cars --to milvus --store-uri http://milvus:19530
      clipseek migrate -c cars --to local --as cars-local
    """
    from tqdm import tqdm

    from ..migrate import migrate as run_migration

    bar = tqdm(desc=f"copying {collection}", unit="rec", disable=quiet, file=sys.stderr, dynamic_ncols=True)

    def set_total(n: int) -> None:
        bar.total = n
        bar.refresh()

    try:
        report = run_migration(
            obj.engine, collection, to, store_uri=store_uri, new_name=new_name, batch_size=batch_size, sample=sample,
            on_progress=bar.update, on_total=set_total,
        )
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    resumed = f" ({report.resumed_after} already copied by an earlier run)" if report.resumed_after else ""
    click.echo(
        f"collection {report.collection!r}: {report.records} records copied from {report.source_store} to "
        f"{report.target_store}{resumed} in {report.seconds:.1f} s"
    )
    click.echo(
        f"verified: counts and fields equal, {report.records_checked} records equal, "
        f"{report.searches_identical} of {report.searches_checked} searches identical"
    )
    if report.former_store:
        click.echo(f"the collection now uses the {report.target_store} store; its former data is still in {report.former_store}")
