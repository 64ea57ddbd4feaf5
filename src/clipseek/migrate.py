"""Move a collection to another store (``clipseek migrate``): local to Milvus, Milvus to local ...

The records (ids, vectors, every metadata key, bookkeeping ones included) are copied in batches,
in id order, into a new store directory of the collection; ``migrating.json`` records how far the
copy got, so an interrupted run (Ctrl-C, a server that went away) resumes where it stopped. Then
the copy is verified against the source: the counts and the field names, a sample of records
(metadata equal, vectors equal to 1e-6) and a sample of searches (each sampled record's own
vector, top 10: the same ids, cosines within 1e-5). Only then is the collection switched, by one
atomic rewrite of ``collection.json`` (the encoder record and calibration are kept as they are);
the former store's data is left where it was, to be deleted by hand once the new one is trusted.

With ``new_name`` the copy becomes a new collection instead and the source is left as it is.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .engine import _NAME_RE, Engine
from .errors import ClipseekError, CollectionExists
from .plugins import get_registry
from .stores.base import VectorStore

STATE = "migrating.json"


class MigrationFailed(ClipseekError):
    """The copy does not match its source; the collection was not switched."""


@dataclass
class MigrationReport:
    collection: str
    source_store: str
    target_store: str
    records: int = 0
    copied: int = 0
    resumed_after: int = 0  # records a previous run had already copied
    seconds: float = 0.0
    records_checked: int = 0
    searches_checked: int = 0
    searches_identical: int = 0
    mismatches: list[str] = field(default_factory=list)
    former_store: str | None = None  # where the source's data still is (in-place moves)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2))
    os.replace(tmp, path)


def migrate(
    engine: Engine,
    name: str,
    to: str,
    *,
    store_uri: str | None = None,
    store_options: dict[str, Any] | None = None,
    new_name: str | None = None,
    batch_size: int = 1000,
    sample: int = 20,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Copy collection ``name`` into a ``to`` store and switch it there (or into ``new_name``)."""
    target_cls = get_registry().store_class(to)
    options = {k: v for k, v in {**(store_options or {}), "uri": store_uri}.items() if v is not None}
    if set(options) & target_cls.secret_options:
        raise ClipseekError(f"give the {to} store's credentials in the environment or the configuration file")
    in_place = new_name is None or new_name == name
    if not in_place:
        assert new_name is not None
        if not _NAME_RE.match(new_name):
            raise ClipseekError(f"bad collection name {new_name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        if engine.exists(new_name):
            raise CollectionExists(f"collection {new_name!r} already exists")
    # in place, the source is opened for writing: no index run can change it during the copy
    col = engine.open(name, read_only=not in_place)
    config = dict(col.config)
    if in_place and to == col.store_name and options == dict(config.get("store_options") or {}):
        raise ClipseekError(f"collection {name!r} is already in the {to} store")
    target_dir = col.path if in_place else engine.collections_dir / str(new_name)
    target_dir.mkdir(parents=True, exist_ok=True)
    state_file = target_dir / STATE
    state = _resume_state(state_file, to, options, col.path)
    if state is None:
        taken = {config.get("store_dir", "store")} if in_place else set()
        store_dir = f"store.{to}" if in_place else "store"
        k = 2
        while store_dir in taken or (target_dir / store_dir).exists():
            store_dir = f"store.{to}.{k}"
            k += 1
        state = {"to": to, "options": options, "source": str(col.path), "store_dir": store_dir, "done": 0, "last": None}
        _write_json(state_file, state)
    report = MigrationReport(name if in_place else str(new_name), col.store_name, to, resumed_after=int(state["done"]))
    t0 = time.perf_counter()
    dim = col.encoder_info.dim
    target: VectorStore = target_cls(target_dir / state["store_dir"] if target_cls.persistent else None, dim, **options)
    try:
        ids = sorted(col.store.ids())
        report.records = len(ids)
        if on_total:
            on_total(len(ids))
        start = bisect_right(ids, state["last"]) if state["last"] is not None else 0
        if on_progress and start:
            on_progress(start)
        for i in range(start, len(ids), batch_size):
            chunk = ids[i : i + batch_size]
            recs = [r for r in col.store.get(chunk) if r is not None]
            target.upsert(recs)
            target.flush()
            report.copied += len(recs)
            state.update(done=i + len(chunk), last=chunk[-1])
            _write_json(state_file, state)
            if on_progress:
                on_progress(len(chunk))
        _verify(col.store, target, ids, sample, report)
    finally:
        target.close()
    report.seconds = time.perf_counter() - t0
    if report.mismatches:
        raise MigrationFailed(
            f"the copy of {name!r} in the {to} store does not match its source, so the collection was not switched: "
            + "; ".join(report.mismatches[:5])
            + (f" ... ({len(report.mismatches)} in all)" if len(report.mismatches) > 5 else "")
        )
    new_config = {k: v for k, v in config.items() if k not in ("store_options", "store_dir")}
    new_config.update(store=to, store_dir=state["store_dir"])
    if options:
        new_config["store_options"] = options
    new_config["migrated"] = {
        "from": col.store_name,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "records": report.records,
    }
    if in_place:
        report.former_store = str(col.path / config.get("store_dir", "store"))
        engine._open.pop(name, None)
        col.close()
    else:
        new_config.update(name=str(new_name), created_at=new_config["migrated"]["at"])
        for f in ("last_run.json",):
            if (col.path / f).is_file():
                shutil.copy2(col.path / f, target_dir / f)
    _write_json(target_dir / "collection.json", new_config)  # the switch: one atomic rename
    state_file.unlink()
    return report


def _resume_state(state_file: Path, to: str, options: dict[str, Any], source: Path) -> dict[str, Any] | None:
    if not state_file.is_file():
        return None
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as e:
        raise ClipseekError(f"{state_file}: unreadable ({e}); delete it to start the migration over") from None
    if state.get("to") != to or state.get("options") != options or state.get("source") != str(source):
        raise ClipseekError(
            f"a migration of {state.get('source')} to {state.get('to')} {state.get('options')} is under way here "
            f"({state_file}); run that one again to finish it, or delete the file and {state.get('store_dir')} to drop it"
        )
    return state  # type: ignore[no-any-return]


def _verify(src: VectorStore, dst: VectorStore, ids: list[str], sample: int, report: MigrationReport) -> None:
    """Counts, fields, a sample of records and of searches; findings go to ``report.mismatches``."""
    n_src, n_dst = src.count(), dst.count()
    if n_src != n_dst:
        report.mismatches.append(f"{n_dst} records in the copy, {n_src} in the source")
    if src.fields() != dst.fields():
        report.mismatches.append(f"fields {dst.fields()} in the copy, {src.fields()} in the source")
    picked = random.Random(0).sample(ids, min(sample, len(ids)))
    for a, b in zip(src.get(picked), dst.get(picked)):
        report.records_checked += 1
        if a is None:
            continue  # deleted from the source meanwhile
        if b is None:
            report.mismatches.append(f"record {a.id!r} is missing from the copy")
        elif b.metadata != a.metadata:
            report.mismatches.append(f"record {a.id!r} has other metadata in the copy")
        elif not np.allclose(a.vector, b.vector, atol=1e-6):
            report.mismatches.append(f"record {a.id!r} has another vector in the copy")
    for rec in src.get(picked):
        if rec is None:
            continue
        want = [(h.id, h.cosine) for h in src.search(rec.vector, 10)]
        got = [(h.id, h.cosine) for h in dst.search(rec.vector, 10)]
        report.searches_checked += 1
        same_ids = [i for i, _ in want] == [i for i, _ in got]
        if same_ids and all(abs(x - y) <= 1e-5 for (_, x), (_, y) in zip(want, got)):
            report.searches_identical += 1
        elif not got or got[0][1] < want[0][1] - 1e-5 or len({i for i, _ in want} & {i for i, _ in got}) < 0.9 * len(want):
            report.mismatches.append(f"a search by {rec.id!r} answers {[i for i, _ in got][:3]}..., the source {[i for i, _ in want][:3]}...")


__all__ = ["MigrationFailed", "MigrationReport", "migrate"]
