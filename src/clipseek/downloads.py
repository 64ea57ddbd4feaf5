"""URL items at ingest: a content-addressed download cache and the download stage ahead of decoding.

:class:`DownloadCache` keeps each downloaded body once, named by its sha256
(``objects/ab/ab12...``), and remembers which URL gave which body (``urls/<sha256 of the URL>``, a
one-line file). A body appears in ``objects/`` only complete (written to ``tmp/``, then renamed), and
its URL entry only after it: a run killed at any moment leaves no partial object, and a re-run (or a
manifest with an added row, or the same URL twice) downloads nothing it already has.

:class:`DownloadStage` turns the URL refs of a ref stream into file refs: downloads run in a pool
of ``concurrency`` threads with at most ``2 * concurrency`` queued, stream into the cache (no body
is held in memory), and come out in the order they finish, so one slow server does not stall the
rest. A failed download comes out with its :class:`~clipseek.errors.DownloadError` (its ``reason``
key says why). With ``keep=False`` an item's file is deleted once its record is stored (or it
failed), so originals do not pile up; with ``keep=True`` (the default) they stay, and the record's
``path`` points at them for the picture grid and the web page.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterable, Iterator

from .net import Downloader, Limits
from .types import ImageRef

DEFAULT_CONCURRENCY = 16
_STALE_TMP_SECONDS = 3600.0  # tmp files older than this are left over from a killed run


def url_fingerprint(url: str) -> str:
    """The fingerprint of a URL item: its URL (a re-run skips it without contacting the server)."""
    return f"url:{url}"


class _HashingFile:
    """A download sink writing to a file and hashing as it goes; ``reset`` starts over (a retry)."""

    def __init__(self, path: Path) -> None:
        import hashlib  # here, not at module level: importing the engine stays cheap

        self.fp = path.open("wb")
        self._new = hashlib.sha256
        self.sha = self._new()

    def reset(self) -> None:
        self.fp.seek(0)
        self.fp.truncate()
        self.sha = self._new()

    def write(self, data: bytes) -> None:
        self.fp.write(data)
        self.sha.update(data)


class DownloadCache:
    """Downloaded bodies under ``root``, by content (sha256), with a URL -> content index."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    def object_path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def _url_entry(self, url: str) -> Path:
        import hashlib

        key = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / "urls" / key[:2] / key

    def lookup(self, url: str) -> Path | None:
        """The cached body of ``url``, or None when it was never downloaded (or was removed)."""
        try:
            digest = self._url_entry(url).read_text().strip()
        except OSError:
            return None
        path = self.object_path(digest)
        return path if digest and path.is_file() else None

    def fetch(self, url: str, downloader: Downloader) -> tuple[Path, bool]:
        """(the cached body of ``url``, whether it was downloaded now): downloads it only when it
        is not cached. Raises DownloadError when the download fails."""
        cached = self.lookup(url)
        if cached is not None:
            return cached, False
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / os.urandom(16).hex()
        try:
            sink = _HashingFile(tmp)
            try:
                downloader.download(url, sink)
            finally:
                sink.fp.close()
            path = self.object_path(sink.sha.hexdigest())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)  # atomic: an object is complete or absent
        finally:
            tmp.unlink(missing_ok=True)
        entry = self._url_entry(url)
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry_tmp = self._tmp / os.urandom(16).hex()
        entry_tmp.write_text(path.name + "\n")
        os.replace(entry_tmp, entry)
        return path, True

    def remove(self, urls: Iterable[str], path: Path) -> None:
        """Forget ``urls`` and delete the body they gave."""
        for url in urls:
            self._url_entry(url).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def sweep(self) -> None:
        """Delete tmp files a killed run left behind (old enough that no live run is writing them)."""
        try:
            entries = list(self._tmp.iterdir())
        except OSError:
            return
        now = time.time()
        for p in entries:
            try:
                if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    p.unlink()
            except OSError:
                pass


class DownloadStage:
    """Downloads the URL refs of an ingest ahead of decoding (see the module docstring).

    Nothing starts (no thread, no httpx import) until the first URL ref arrives."""

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        limits: Limits | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        allow_private: bool | None = None,
        keep: bool = True,
        proxy: str | None = None,
    ) -> None:
        self.cache = DownloadCache(Path(cache_dir))
        self.limits = limits or Limits()
        self.concurrency = max(1, concurrency)
        self.allow_private = allow_private
        self.proxy = proxy  # see net.proxies_from: None = the environment's, "" = none
        self.keep = keep
        self.downloaded = 0  # bodies fetched from servers in this run (cache hits not counted)
        self._held: dict[str, Path] = {}  # id -> its file, until stored or failed
        self._users: dict[Path, int] = {}  # file -> how many ids hold it (same URL or same bytes)
        self._urls: dict[Path, set[str]] = {}  # file -> the URLs that gave it

    def run(self, refs: Iterable[ImageRef]) -> Iterator[tuple[ImageRef, Exception | None]]:
        """Yield every ref: non-URL refs as they are, URL refs as file refs once downloaded, or
        with the exception that made them fail."""
        downloader: Downloader | None = None
        pool: ThreadPoolExecutor | None = None
        queued: dict[Future[tuple[Path, bool]], list[ImageRef]] = {}
        by_url: dict[str, Future[tuple[Path, bool]]] = {}
        try:
            for ref in refs:
                if ref.url is None:
                    yield ref, None
                    continue
                if pool is None:
                    self.cache.sweep()
                    downloader = Downloader(
                        self.limits, allow_private=self.allow_private, max_connections=self.concurrency, proxy=self.proxy
                    )
                    pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="clipseek-download")
                fut = by_url.get(ref.url)
                if fut is None:
                    fut = by_url[ref.url] = pool.submit(self.cache.fetch, ref.url, downloader)  # type: ignore[arg-type]
                    queued[fut] = []
                queued[fut].append(ref)
                while len(queued) >= 2 * self.concurrency:
                    done, _ = wait(queued, return_when=FIRST_COMPLETED)
                    yield from self._finish(done, queued, by_url)
                yield from self._finish([f for f in queued if f.done()], queued, by_url)
            while queued:
                done, _ = wait(queued, return_when=FIRST_COMPLETED)
                yield from self._finish(done, queued, by_url)
        finally:
            if pool is not None and downloader is not None:
                # Ctrl-C or an encoder error: stop the downloads in flight instead of waiting for them.
                downloader.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                downloader.close()

    def _finish(
        self,
        done: Iterable[Future[tuple[Path, bool]]],
        queued: dict[Future[tuple[Path, bool]], list[ImageRef]],
        by_url: dict[str, Future[tuple[Path, bool]]],
    ) -> Iterator[tuple[ImageRef, Exception | None]]:
        for fut in list(done):
            refs = queued.pop(fut)
            by_url.pop(refs[0].url or "", None)
            try:
                path, fresh = fut.result()
            except Exception as e:  # noqa: BLE001 - reported per item; the job goes on
                for ref in refs:
                    yield ref, e
                continue
            self.downloaded += fresh
            for ref in refs:
                yield self._as_file(ref, path), None

    def _as_file(self, ref: ImageRef, path: Path) -> ImageRef:
        url = ref.url or ""
        self._held[ref.id] = path
        self._users[path] = self._users.get(path, 0) + 1
        self._urls.setdefault(path, set()).add(url)
        meta = dict(ref.metadata)
        meta.setdefault("url", url)
        meta["file_size"] = path.stat().st_size
        if self.keep:
            meta["path"] = str(path)
        fingerprint = ref.fingerprint or url_fingerprint(url)
        return dataclasses.replace(ref, url=None, path=path, metadata=meta, fingerprint=fingerprint)

    def release(self, ids: Iterable[str]) -> None:
        """These items are stored (or failed): without ``keep``, delete files no item holds now."""
        for id_ in ids:
            path = self._held.pop(id_, None)
            if path is None:
                continue
            self._users[path] -= 1
            if self._users[path] == 0:
                del self._users[path]
                urls = self._urls.pop(path)
                if not self.keep:
                    self.cache.remove(urls, path)
