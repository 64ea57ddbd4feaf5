"""Background ingest jobs: ``POST /v1/collections/{name}/index`` runs :meth:`Collection.index` on a
worker thread; ``GET /v1/jobs/{id}`` reads its progress.

- One job per collection at a time (a second one is a 409 naming the running job).
- Progress comes from ``index``'s ``on_progress``/``on_total`` callbacks and the live
  ``IngestReport.counts``; every step (at most every ``EMIT_EVERY`` seconds) and the end are
  announced as ``state.emit("job", job=<the job's JSON>)``.
- At shutdown (``state.extras["on_shutdown"]``) running jobs are asked to stop: the next progress
  callback raises :class:`JobCancelled`, the ingest commits what it has encoded (complete records;
  a later run resumes after them) and the job ends as ``cancelled``; the shutdown waits for them.
- Files a job reads stay inside the configured roots: the source itself must be inside one, and
  every file item it lists (a manifest's paths, a folder's symlinks) is checked again after
  resolving; an item outside is skipped with reason ``outside_roots``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ClipseekError
from ..failures import Failure
from ..ingest import IngestReport
from ..sources import FolderSource, Source, source_for
from ..types import ImageRef
from .errors import ApiError

if TYPE_CHECKING:
    from ..engine import Collection
    from .deps import State

log = logging.getLogger("clipseek.server")

EMIT_EVERY = 0.5  # seconds between "job" events while a job runs
KEEP_FINISHED = 100  # finished jobs remembered for GET /v1/jobs
MAX_FAILURES_SHOWN = 100  # failures listed in a job's report (the counts are complete)
OUTSIDE_ROOTS = "outside_roots"


class JobCancelled(Exception):
    """Raised from the progress callback to stop a running ingest (the server is shutting down)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (already resolved: no symlink, no ``..``) is one of ``roots`` or below one."""
    return any(path == r or path.is_relative_to(r) for r in roots)


def _outside(ref: ImageRef, roots: list[Path]) -> Failure | None:
    if ref.path is None:
        return None
    try:
        real = Path(ref.path).resolve()
    except (OSError, RuntimeError, ValueError):
        real = None
    if real is not None and inside(real, roots):
        return None
    return Failure(ref.id, "outside the server's roots (refused)", OUTSIDE_ROOTS, str(ref.path))


class RootedFolder(FolderSource):
    """A folder inside the roots whose files (symlinks included) are checked to stay inside them.
    A FolderSource still, so ``prune`` works."""

    def __init__(self, root: str | Path, roots: list[Path]) -> None:
        super().__init__(root)
        self._roots = roots

    def __iter__(self) -> Iterator[ImageRef]:
        for ref in super().__iter__():
            bad = _outside(ref, self._roots)
            if bad is not None:
                self.problems.append(bad)
                continue
            yield ref


class RootedSource(Source):
    """A manifest source whose file items must resolve inside the roots (URL and embedded-bytes
    items pass: URLs go through the download guard)."""

    def __init__(self, inner: Any, roots: list[Path]) -> None:
        self.inner = inner
        self._roots = roots
        self._refused: list[Failure] = []

    @property  # type: ignore[override]
    def problems(self) -> list[Failure]:
        return [*getattr(self.inner, "problems", []), *self._refused]

    @property
    def duplicates(self) -> list[Any]:
        """The inner source's repeated ids, but for refused ones (no row of theirs was indexed)."""
        refused = {f.id for f in self._refused}
        return [d for d in getattr(self.inner, "duplicates", []) if d[0] not in refused]

    def count(self) -> int | None:
        count = getattr(self.inner, "count", None)
        n = count() if callable(count) else None
        return n if isinstance(n, int) else None

    def __iter__(self) -> Iterator[ImageRef]:
        for ref in self.inner:
            bad = _outside(ref, self._roots)
            if bad is not None:
                self._refused.append(bad)
                continue
            yield ref


def rooted_source(target: Path, roots: list[Path]) -> Any:
    """The source for ``target`` (a resolved path inside the roots) with every file item checked."""
    src = source_for(target)
    if isinstance(src, FolderSource):
        return RootedFolder(src.root, roots)
    return RootedSource(src, roots)


@dataclass
class Job:
    id: str
    collection: str
    source: str
    created_at: str = field(default_factory=_now)
    state: str = "queued"
    done: int = 0
    total: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    report: IngestReport = field(default_factory=IngestReport)
    result: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    _t0: float = 0.0
    _t1: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def to_dict(self) -> dict[str, Any]:
        elapsed = ((self._t1 or time.monotonic()) - self._t0) if self._t0 else 0.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.state == "running" and self.total is not None and rate > 0:
            eta = round(max(0, self.total - self.done) / rate, 1)
        return {
            "id": self.id,
            "collection": self.collection,
            "source": self.source,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "failed": self.report.counts.get("failed", 0) if self.result is None else len(self.report.failed),
            "rate": round(rate, 2),
            "eta_s": eta,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "report": self.result,
        }


class Jobs:
    """The server's ingest jobs (``state.extras["jobs"]``)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id!r} (jobs are kept until the server restarts)")
        return job

    def list(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def running(self, collection: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.collection == collection and j.active), None)

    def start(self, col: Collection, source: Any, label: str, options: dict[str, Any]) -> Job:
        """Start indexing ``source`` into ``col`` on a worker thread; 409 if a job runs on it."""
        with self._lock:
            if self._closed:
                raise ApiError(503, "shutting_down", "the server is shutting down; start the job again after it restarts")
            busy = self.running(col.name)
            if busy is not None:
                raise ApiError(
                    409,
                    "job_running",
                    f"job {busy.id} is already indexing into collection {col.name!r}; "
                    f"wait for it to finish (GET /v1/jobs/{busy.id})",
                )
            job = Job(id=uuid.uuid4().hex[:12], collection=col.name, source=label)
            self._jobs[job.id] = job
            self._forget_old()
            job.thread = threading.Thread(
                target=self._run, args=(job, col, source, options), name=f"clipseek-job-{job.id}", daemon=True
            )
            job.thread.start()
        return job

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if not j.active]
        for j in sorted(done, key=lambda j: j.created_at)[: max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[j.id]

    def _emit(self, job: Job) -> None:
        self.state.emit("job", job=job.to_dict())

    def _run(self, job: Job, col: Collection, source: Any, options: dict[str, Any]) -> None:
        job.state, job.started_at, job._t0 = "running", _now(), time.monotonic()
        self._emit(job)
        last = [time.monotonic()]

        def progress(n: int) -> None:
            job.done += n
            if job.cancel.is_set():
                raise JobCancelled()
            now = time.monotonic()
            if now - last[0] >= EMIT_EVERY:
                last[0] = now
                self._emit(job)

        def total(n: int) -> None:
            job.total = n

        settings = self.state.settings
        try:
            col.index(
                source,
                on_progress=progress,
                on_total=total,
                report=job.report,
                allow_private_urls=settings.allow_private_urls,
                proxy=settings.proxy,
                max_download_mb=settings.max_upload_bytes / 1e6,
                **options,
            )
            job.state = "done"
        except JobCancelled:
            job.state, job.error = "cancelled", "stopped because the server shut down; start the job again to resume"
        except ClipseekError as e:
            job.state, job.error = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - a job thread must record its end, whatever happened
            log.exception("ingest job %s failed", job.id)
            job.state, job.error = "failed", f"internal error: {type(e).__name__}: {e}"
        finally:
            job._t1 = time.monotonic()
            job.finished_at = _now()
            rep = job.report.to_dict()
            rep["failed"] = rep["failed"][:MAX_FAILURES_SHOWN]
            job.result = rep
            written = job.report.added + job.report.updated
            if written:
                self.state.emit("records_written", collection=col.name, count=written)
            self._emit(job)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Ask every running job to stop and wait (at most ``timeout`` s in all) for them to end."""
        with self._lock:
            self._closed = True
            running = [j for j in self._jobs.values() if j.active]
        for j in running:
            j.cancel.set()
        deadline = time.monotonic() + timeout
        for j in running:
            if j.thread is not None:
                j.thread.join(max(0.0, deadline - time.monotonic()))
                if j.thread.is_alive():
                    log.warning("ingest job %s did not stop within %s s", j.id, timeout)


def jobs_of(state: State) -> Jobs:
    jobs = state.extras.get("jobs")
    if jobs is None:
        jobs = state.extras["jobs"] = Jobs(state)
        hooks: list[Callable[[], None]] = state.extras.setdefault("on_shutdown", [])
        hooks.append(jobs.shutdown)
    return jobs  # type: ignore[no-any-return]
