"""The REST API under ``/v1`` (the contract in words: ``docs/api.md``; bodies: ``schemas.py``).

Every route is a thin call into the engine: a :class:`~clipseek.engine.Collection` from
``state.collection(name)`` does the work; errors are the engine's ``ClipseekError``s (mapped to
statuses in ``errors.py``) or :class:`ApiError`. Routes that encode, search or read files are
plain ``def`` routes, so FastAPI runs them on its thread pool and the event loop stays free.

What a request may make the server read is bounded here:

- a server-side ``path`` (records, index jobs) is resolved (symlinks, ``..``) and must lie inside
  a configured root, else 403; relative paths are relative to the first root;
- an image URL goes through :func:`clipseek.net.fetch_url` with the address guard (loopback,
  link-local and private addresses refused with 403 unless ``allow_private_urls``) and the upload
  size limit, through the ``proxy`` setting's proxy (502 ``proxy_failed`` when it fails);
- a thumbnail is made only from the record's own file: the ``path`` the server stored when it read
  the image, and only while that file still has the bytes it hashed then (``_sha256``, bookkeeping
  no client can write). No request parameter ever names a file.
- every image is checked against ``max_pixels`` from its header before decoding (413).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import APIRouter, FastAPI, File, Form, Query, UploadFile
from fastapi.responses import Response

from .. import images
from ..downloads import DownloadCache
from ..engine import _NAME_RE, Collection, SearchResult
from ..errors import ClipseekError, CollectionNotFound, DownloadError, RecordNotFound
from ..ingest import HASH_KEY
from ..net import fetch_url
from ..sources import file_ref
from ..types import Record
from . import schemas as S
from .deps import Reader, State, Writer
from .errors import ApiError
from .jobs import inside, jobs_of, rooted_source

THUMB_SIZES = (16, 1024)
_create_lock = threading.Lock()


def install(app: FastAPI, state: State) -> None:
    jobs = jobs_of(state)
    r = APIRouter(prefix="/v1")
    st = state.settings

    # ------------------------------------------------------------------------------ collections

    @r.get("/collections", tags=["collections"], summary="List collections", response_model=S.CollectionList)
    def list_collections(key: Reader) -> dict[str, Any]:
        out, unavailable = [], []
        for n in state.engine.names():
            try:
                out.append(_info(state, state.collection(n)))
            except ClipseekError as e:  # damaged, or held by another process: listed, not hidden
                unavailable.append({"name": n, "error": str(e)})
        return {"collections": out, "unavailable": unavailable}

    @r.post(
        "/collections",
        tags=["collections"],
        status_code=201,
        summary="Create a collection (with a model, or vector-only with a dimension)",
        response_model=S.CollectionInfo,
        responses={409: {"description": "the name is taken"}, 503: {"description": "the model cannot be loaded"}},
    )
    def create_collection(body: S.CreateCollection, key: Writer) -> dict[str, Any]:
        with _create_lock:
            if body.dimension is not None:
                if body.model is not None:
                    raise ApiError(400, "bad_request", "give a model or a dimension, not both: a model fixes the dimension")
                col = state.engine.create(body.name, store=body.store, dim=body.dimension)
            else:
                col = state.engine.create(body.name, model=_model(state, body.model), store=body.store)
        return _info(state, col)

    @r.get("/collections/{name}", tags=["collections"], summary="Describe a collection", response_model=S.CollectionInfo)
    def get_collection(name: str, key: Reader) -> dict[str, Any]:
        return _info(state, _collection(state, name))

    @r.delete(
        "/collections/{name}", tags=["collections"], summary="Delete a collection and its files", response_model=S.Deleted
    )
    def delete_collection(name: str, key: Writer) -> dict[str, Any]:
        with _create_lock:
            busy = jobs.running(name)
            if busy is not None:
                raise ApiError(409, "job_running", f"job {busy.id} is indexing into {name!r}; delete it after the job ends")
            if not _NAME_RE.match(name):
                raise CollectionNotFound(f"no collection {name!r}")
            state.engine.drop(name)  # works on a damaged collection too
        return {"deleted": name}

    # ------------------------------------------------------------------------------ records

    @r.post(
        "/collections/{name}/records",
        tags=["records"],
        summary="Add or replace records by vector, image URL or server-side path",
        response_model=S.Upserted,
    )
    def add_records(name: str, body: S.AddRecords, key: Writer) -> dict[str, Any]:
        if len(body.records) > st.max_batch:
            raise ApiError(
                413, "too_many_records", f"{len(body.records)} records in one request; the limit is {st.max_batch}"
            )
        col = _collection(state, name)
        vec_ids: list[str] = []
        vecs: list[list[float]] = []
        vec_meta: list[dict[str, Any]] = []
        imgs: list[tuple[str, bytes, dict[str, Any], dict[str, Any], str | None]] = []
        for i, rec in enumerate(body.records):
            given = [x for x in ("vector", "url", "path") if getattr(rec, x) is not None]
            if len(given) != 1:
                raise ApiError(400, "bad_request", f"record {i}: give exactly one of vector, url or path (got {given or 'none'})")
            user = _user_metadata(rec.metadata, f"record {rec.id or i}")
            if rec.vector is not None:
                if not rec.id:
                    raise ApiError(400, "bad_request", f"record {i}: a vector record needs an id")
                vec_ids.append(rec.id)
                vecs.append(rec.vector)
                vec_meta.append(user)
        # Image records: check every path and URL first (nothing is fetched before all are allowed).
        image_recs = [(i, rec) for i, rec in enumerate(body.records) if rec.vector is None]
        if image_recs:
            col.encoder  # noqa: B018 - a vector-only collection refuses images before anything is read
            paths = {i: _inside_roots(state, rec.path) for i, rec in image_recs if rec.path is not None}
            for i, rec in image_recs:
                user = _user_metadata(rec.metadata, f"record {rec.id or i}")
                if rec.path is not None:
                    p = paths[i]
                    data = _read_file(p, st.max_upload_bytes)
                    ref = file_ref(p)
                    imgs.append((rec.id or str(p), data, dict(ref.metadata), user, ref.fingerprint))
                else:
                    assert rec.url is not None
                    data = _fetch(state, rec.url)
                    own = {"url": rec.url, "path": str(_keep_original(col, data))}
                    imgs.append((rec.id or rec.url, data, own, user, None))
        if vec_ids:
            import numpy as np

            try:
                arr = np.asarray(vecs, dtype=np.float32)
            except ValueError:
                raise ApiError(400, "bad_vector", "vectors of different lengths in one request") from None
            col.add_vectors(vec_ids, arr, vec_meta)
        ids = list(vec_ids)
        if imgs:
            ids += _store_images(state, col, imgs)
        state.emit("records_written", collection=name, count=len(ids))
        return {"upserted": len(dict.fromkeys(ids)), "ids": ids}

    @r.post(
        "/collections/{name}/records/upload",
        tags=["records"],
        summary="Add an uploaded image (multipart) as a record",
        response_model=S.Upserted,
        responses={413: {"description": "file or image too large"}, 415: {"description": "not an image"}},
    )
    def upload_record(
        name: str,
        key: Writer,
        file: Annotated[UploadFile, File(description="the image")],
        id: Annotated[Optional[str], Form(max_length=512, description="record id (default: sha256 of the bytes)")] = None,
        metadata: Annotated[Optional[str], Form(description="metadata as a JSON object")] = None,
    ) -> dict[str, Any]:
        col = _collection(state, name)
        col.encoder  # noqa: B018 - refuse on a vector-only collection before reading the upload
        user = _user_metadata(_json_form(metadata, "metadata", dict), "the upload")
        data = _read_upload(file, st.max_upload_bytes)
        own: dict[str, Any] = {"path": str(_keep_original(col, data))}
        if file.filename:
            own["file_name"] = Path(file.filename).name
        ids = _store_images(state, col, [(id or hashlib.sha256(data).hexdigest(), data, own, user, None)])
        state.emit("records_written", collection=name, count=1)
        return {"upserted": 1, "ids": ids}

    @r.get(
        "/collections/{name}/records/{id:path}/thumbnail",
        tags=["records"],
        summary="A JPEG thumbnail of a record's own image",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no record, or its file is gone"}},
    )
    def thumbnail(
        name: str, id: str, key: Reader, size: Annotated[int, Query(ge=THUMB_SIZES[0], le=THUMB_SIZES[1])] = 256
    ) -> Response:
        col = _collection(state, name)
        rec = _record(col, id)
        data, sha = _record_bytes(rec)
        img = images.load_image(data, name=rec.id, fit=size)
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        return Response(
            buf.getvalue(),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600", "ETag": f'"{sha[:16]}-{size}"'},
        )

    @r.get("/collections/{name}/records/{id:path}", tags=["records"], summary="Get a record", response_model=S.RecordOut)
    def get_record(name: str, id: str, key: Reader, include_vector: bool = False) -> dict[str, Any]:
        col = _collection(state, name)
        rec = _record(col, id)
        out: dict[str, Any] = {"id": rec.id, "metadata": {k: v for k, v in rec.metadata.items() if not k.startswith("_")}}
        if include_vector:
            out["vector"] = [float(x) for x in rec.vector]
        return out

    @r.post(
        "/collections/{name}/records/delete",
        tags=["records"],
        summary="Delete records by ids and/or by filter",
        response_model=S.DeletedCount,
    )
    def delete_records(name: str, body: S.DeleteRecords, key: Writer) -> dict[str, Any]:
        if not body.ids and not body.where:
            raise ApiError(400, "bad_request", "give ids or where (to delete everything, delete the collection)")
        if body.ids and len(body.ids) > st.max_batch:
            raise ApiError(413, "too_many_records", f"{len(body.ids)} ids in one request; the limit is {st.max_batch}")
        col = _collection(state, name)
        n = col.delete(body.ids or [], where=body.where or None)
        return {"deleted": n}

    # ------------------------------------------------------------------------------ search

    @r.post(
        "/collections/{name}/search",
        tags=["search"],
        summary="Search by text, image URL, an existing record or a vector",
        response_model=S.SearchOut,
    )
    def search(name: str, body: S.SearchBody, key: Reader) -> dict[str, Any]:
        _check_top(state, body.top)
        given = [k for k in ("text", "image_url", "id", "vector") if getattr(body, k) is not None]
        if len(given) != 1:
            raise ApiError(400, "bad_request", f"give exactly one of text, image_url, id or vector (got {given or 'none'})")
        col = _collection(state, name)
        opts = {"top": body.top, "where": body.where, "threshold": body.threshold, "min_cosine": body.min_cosine}
        if body.image_url is not None:
            col._conditions(body.where)  # a bad filter fails before the download
            col.encoder  # noqa: B018 - and a vector-only collection before it
            result = _image_search(state, col, _fetch(state, body.image_url), body.image_url, opts)
        elif body.text is not None:
            result = col.search(body.text, **opts)
        elif body.id is not None:
            result = col.search(like=body.id, **opts)
        else:
            result = col.search(vector=body.vector, **opts)
        state.emit("search", collection=name, result=result)
        return result.to_dict()

    @r.post(
        "/collections/{name}/search/image",
        tags=["search"],
        summary="Search by an uploaded image (multipart)",
        response_model=S.SearchOut,
    )
    def search_image(
        name: str,
        key: Reader,
        file: Annotated[UploadFile, File(description="the query image")],
        top: Annotated[int, Form(ge=1)] = 10,
        where: Annotated[Optional[str], Form(description="filter as JSON")] = None,
        threshold: Annotated[Optional[float], Form(ge=0, le=1)] = None,
        min_cosine: Annotated[Optional[float], Form(ge=-1, le=1)] = None,
    ) -> dict[str, Any]:
        _check_top(state, top)
        col = _collection(state, name)
        cond = _json_form(where, "where", (dict, list))
        col._conditions(cond)
        col.encoder  # noqa: B018
        data = _read_upload(file, st.max_upload_bytes)
        label = Path(file.filename).name if file.filename else "<uploaded image>"
        opts = {"top": top, "where": cond, "threshold": threshold, "min_cosine": min_cosine}
        result = _image_search(state, col, data, label, opts)
        state.emit("search", collection=name, result=result)
        return result.to_dict()

    # ------------------------------------------------------------------------------ classify

    @r.post(
        "/collections/{name}/classify",
        tags=["classify"],
        summary="Zero-shot labels for a record, an image URL or a vector",
        response_model=S.ClassifyOut,
    )
    def classify(name: str, body: S.ClassifyBody, key: Reader) -> dict[str, Any]:
        given = [k for k in ("id", "image_url", "vector") if getattr(body, k) is not None]
        if len(given) != 1:
            raise ApiError(400, "bad_request", f"give exactly one of id, image_url or vector (got {given or 'none'})")
        col = _collection(state, name)
        enc = col.encoder
        if body.id is not None:
            rec = _record(col, body.id)
            vec, query = rec.vector, {"kind": "like", "like": rec.id}
        elif body.vector is not None:
            vec, query = col.query_vector(vector=body.vector).vector, {"kind": "vector"}
        else:
            assert body.image_url is not None
            vec = enc.embed_image(_decode(state, col, _fetch(state, body.image_url), body.image_url))
            query = {"kind": "image", "image": body.image_url}
        return _classify(col, vec, query, body.labels, body.top, body.templates, body.lang)

    @r.post(
        "/collections/{name}/classify/image",
        tags=["classify"],
        summary="Zero-shot labels for an uploaded image (multipart)",
        response_model=S.ClassifyOut,
    )
    def classify_image(
        name: str,
        key: Reader,
        file: Annotated[UploadFile, File()],
        labels: Annotated[str, Form(description="a JSON list of labels, or comma separated: cat,dog,汽车")],
        top: Annotated[Optional[int], Form(ge=1)] = None,
    ) -> dict[str, Any]:
        from .. import zeroshot

        col = _collection(state, name)
        enc = col.encoder
        labs = _json_form(labels, "labels", list) if labels.lstrip().startswith("[") else zeroshot.parse_labels(labels)
        if len(labs) < 2:
            raise ApiError(422, "invalid_request", "labels: give at least two labels to choose between")
        data = _read_upload(file, st.max_upload_bytes)
        label = Path(file.filename).name if file.filename else "<uploaded image>"
        vec = enc.embed_image(_decode(state, col, data, label))
        return _classify(col, vec, {"kind": "image", "image": label}, labs, top, None, None)

    # ------------------------------------------------------------------------------ jobs

    @r.post(
        "/collections/{name}/index",
        tags=["jobs"],
        status_code=202,
        summary="Start a background ingest job of a folder or manifest inside the roots",
        response_model=S.JobOut,
    )
    def start_index(name: str, body: S.IndexBody, key: Writer) -> dict[str, Any]:
        if body.source.startswith(("http://", "https://")):
            raise ApiError(
                400,
                "bad_request",
                f"{body.source}: indexing a manifest from a URL is not supported; put the manifest inside a root "
                "(its rows may be image URLs)",
            )
        target = _inside_roots(state, body.source)
        if not target.exists():
            raise ApiError(404, "not_found", f"{body.source}: no such file or folder inside the roots")
        opts = body.options
        if opts.labels is not None and len(opts.labels) < 2:
            raise ApiError(422, "invalid_request", "options.labels: give at least two candidate labels")
        source = rooted_source(target, state.roots())
        with _create_lock:
            if state.engine.exists(name):
                col = _collection(state, name)
                if body.model is not None and body.model != col.encoder_info.name:
                    raise ApiError(
                        409, "encoder_mismatch", f"collection {name!r} was built with {col.encoder_info.name!r}, not {body.model!r}"
                    )
            else:
                col = state.engine.create(name, model=_model(state, body.model))
        col.encoder  # noqa: B018 - a vector-only collection is refused now, not in the job
        options: dict[str, Any] = {"prune": opts.prune, "dedup": opts.dedup}
        if opts.labels:
            options.update(labels=opts.labels, label_top=opts.label_top, label_min_prob=opts.label_min_prob)
        if opts.batch_size:
            options["batch_size"] = opts.batch_size
        if opts.workers:
            options["workers"] = opts.workers
        job = jobs.start(col, source, body.source, options)
        return job.to_dict()

    @r.get("/jobs", tags=["jobs"], summary="List ingest jobs (newest first)", response_model=S.JobList)
    def list_jobs(key: Reader) -> dict[str, Any]:
        return {"jobs": [j.to_dict() for j in jobs.list()]}

    @r.get("/jobs/{job_id}", tags=["jobs"], summary="An ingest job's progress", response_model=S.JobOut)
    def get_job(job_id: str, key: Reader) -> dict[str, Any]:
        return jobs.get(job_id).to_dict()

    app.include_router(r)


# ---------------------------------------------------------------------------------- helpers


def _collection(state: State, name: str) -> Collection:
    """``state.collection(name)`` for a well-formed name only (a name never walks the file system)."""
    if not _NAME_RE.match(name):
        raise CollectionNotFound(f"no collection {name!r} (names are letters, digits, '.', '_' or '-')")
    return state.collection(name)


def _info(state: State, col: Collection) -> dict[str, Any]:
    info = col.info()
    info.pop("path", None)  # the server's own folders are not the client's business
    info["vector_only"] = col.vector_only
    running = jobs_of(state).running(col.name)
    info["job"] = running.id if running else None
    return info


def _model(state: State, spec: str | None) -> str:
    """The model a request may create a collection with: a registered encoder name or a preset
    already on this machine (or the server's configured model). A request never names a folder or
    a hub id (that would read files outside the roots or download), and never downloads a model."""
    if spec is None or spec == state.settings.model:
        return spec or _default_model(state)
    from ..encoders.presets import PRESETS
    from ..errors import ModelUnavailable
    from ..modelfiles import find_local
    from ..plugins import get_registry

    known = sorted(get_registry().encoders)
    if "/" in spec or "\\" in spec or spec.startswith((".", "~")):
        raise ApiError(
            400,
            "bad_model",
            f"model {spec!r}: name a model ({', '.join(known + sorted(PRESETS))}); model folders and hub ids "
            "are for the server's owner to configure (model = ... under [server] in clipseek.toml)",
        )
    if spec in PRESETS and spec not in known and find_local(spec) is None:
        raise ModelUnavailable(
            f"model {spec!r} is not on this server; its owner can get it with `clipseek model pull {spec}` "
            "(or `clipseek model unpack`) and retry"
        )
    return spec


def _default_model(state: State) -> str:
    """The model for a collection created without one: the configured one, else a default model
    already on this machine, else the offline model. A request never downloads a model."""
    from ..modelfiles import resolve_default_model

    configured = state.settings.model or os.environ.get("CLIPSEEK_MODEL")

    def no_download(name: str) -> Path:
        raise ClipseekError(f"{name} is not on this machine")

    return resolve_default_model(configured, notify=lambda m: None, timeout=1.0, download_fn=no_download)


def _check_top(state: State, top: int) -> None:
    if top > state.settings.max_top:
        raise ApiError(422, "invalid_request", f"top: at most {state.settings.max_top} on this server, got {top}")


def _inside_roots(state: State, raw: str) -> Path:
    """``raw`` resolved (symlinks, ``..``) when it lies inside a configured root; else 403."""
    roots = state.roots()
    if not roots:
        raise ApiError(
            403,
            "no_roots",
            "this server reads no server-side paths: no roots are configured "
            "(start it with `clipseek serve --root DIR`, or roots = [...] under [server] in clipseek.toml)",
        )
    if "\x00" in raw or not raw.strip():
        raise ApiError(400, "bad_request", f"bad path {raw!r}")
    p = Path(raw)
    if not p.is_absolute():
        p = roots[0] / p
    try:
        real = p.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise ApiError(400, "bad_request", f"{raw}: cannot resolve ({e})") from None
    if not inside(real, roots):
        names = ", ".join(str(r) for r in roots)
        raise ApiError(403, "outside_roots", f"{raw}: outside the server's roots ({names}); only files inside them can be read")
    return real


def _read_file(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ApiError(413, "too_large", f"{path}: {size:,} bytes, over the limit of {limit:,} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"{path}: no such file") from None
    except IsADirectoryError:
        raise ApiError(400, "bad_request", f"{path}: a folder, not an image file (index folders with POST .../index)") from None
    except PermissionError:
        raise ApiError(403, "forbidden", f"{path}: the server may not read it (permission denied)") from None


def _read_upload(file: UploadFile, limit: int) -> bytes:
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"the uploaded file is over the limit of {limit:,} bytes")
    if not data:
        raise ApiError(415, "bad_image", "the uploaded file is empty")
    return data


def _fetch(state: State, url: str) -> bytes:
    """Download an image URL with the address guard and the upload size limit."""
    if not url.startswith(("http://", "https://")):
        raise ApiError(400, "bad_url", f"{url!r}: only http:// and https:// image URLs are accepted")
    try:
        settings = state.settings
        return fetch_url(
            url, max_bytes=settings.max_upload_bytes, allow_private=settings.allow_private_urls, proxy=settings.proxy
        )
    except DownloadError as e:
        if e.reason == "refused_address":
            raise ApiError(
                403, "refused_address", f"{e}; this server does not fetch from its own network (allow_private_urls is off)"
            ) from None
        if e.reason == "too_large":
            raise ApiError(413, "too_large", str(e)) from None
        if e.reason == "proxy_failed":  # the server's own network setup, not the client's URL
            raise ApiError(502, "proxy_failed", str(e)) from None
        raise


def _json_form(text: str | None, what: str, kind: Any) -> Any:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"{what}: not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise ApiError(422, "invalid_request", f"{what}: expected a JSON {'object' if kind is dict else 'list or object'}")
    return value


def _user_metadata(meta: dict[str, Any] | None, what: str) -> dict[str, Any]:
    meta = dict(meta or {})
    bad = [k for k in meta if not k or k.startswith("_")]
    if bad:
        raise ApiError(400, "bad_request", f"{what}: bad metadata field name {bad[0]!r} (names starting with '_' are clipseek's own)")
    return meta


def _keep_original(col: Collection, data: bytes) -> Path:
    """Keep an uploaded or downloaded image in the collection's content-addressed cache (the
    ingest's ``downloads/objects``), so its thumbnail can be made later; returns its path."""
    cache = DownloadCache(col.path / "downloads")
    path = cache.object_path(hashlib.sha256(data).hexdigest())
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: complete or absent
    return path


def _decode(state: State, col: Collection, data: bytes, label: str) -> Any:
    """Decode an image as the collection's encoder reads it, within the server's pixel limit."""
    enc = col.encoder
    return images.load_image(
        data, name=label, max_pixels=state.settings.max_pixels, fit=enc.image_side, draft=enc.draft_side
    )


def _store_images(
    state: State, col: Collection, items: list[tuple[str, bytes, dict[str, Any], dict[str, Any], str | None]]
) -> list[str]:
    """Decode, embed and store image records, all or none: (id, bytes, server metadata, user
    metadata, fingerprint) each. The server's metadata (path, url, size...) wins over the user's."""
    enc = col.encoder
    pictures = []
    for id_, data, _, _, _ in items:
        if not isinstance(id_, str) or not id_ or len(id_) > 512:
            raise ApiError(400, "bad_request", f"bad record id {id_!r}: ids are non-empty strings of at most 512 characters")
        pictures.append(_decode(state, col, data, id_))
    vectors = enc.embed_images(pictures)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records: dict[str, Record] = {}
    for (id_, data, own, user, fingerprint), img, vec in zip(items, pictures, vectors):
        width, height = img.info.get(images.SOURCE_SIZE, img.size)
        meta = {**user, **own, "width": width, "height": height, "indexed_at": now, HASH_KEY: hashlib.sha256(data).hexdigest()}
        if fingerprint is not None:
            meta["_fingerprint"] = fingerprint
        records[id_] = Record(id_, vec, meta)
    col.store.upsert(list(records.values()))
    col.store.flush()
    return [it[0] for it in items]


def _image_search(state: State, col: Collection, data: bytes, label: str, opts: dict[str, Any]) -> SearchResult:
    """Search by image bytes: decoded within the pixel limit, embedded, then searched as the
    engine does an image query (same vector, same 'image' calibration)."""
    t0 = time.perf_counter()
    img = _decode(state, col, data, label)
    vec = col.encoder.embed_image(img)
    encode_ms = (time.perf_counter() - t0) * 1000
    result = col.search(vector=vec, **opts)
    result.query = {"kind": "image", "image": label}
    result.encode_ms += encode_ms
    result.took_ms += encode_ms
    return result


def _record(col: Collection, id: str) -> Record:
    rec = col.store.get([id])[0]
    if rec is None:
        raise RecordNotFound(f"no record {id!r} in collection {col.name!r}")
    return rec


def _record_bytes(rec: Record) -> tuple[bytes, str]:
    """The bytes of the image file the server read when it stored ``rec`` (read once: hashed to
    check they are still the same bytes, then decoded from memory), and their sha256."""
    sha = rec.metadata.get(HASH_KEY)
    raw = rec.metadata.get("path")
    if not isinstance(sha, str) or not isinstance(raw, str) or not raw:
        raise ApiError(
            404, "no_image", f"record {rec.id!r} has no image file the server read (added as a vector or from embedded bytes)"
        )
    try:
        data = Path(raw).read_bytes()
    except OSError:
        raise ApiError(404, "image_gone", f"record {rec.id!r}: its image file is gone or unreadable; re-index it") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise ApiError(404, "image_changed", f"record {rec.id!r}: its image file changed since it was indexed; re-index it")
    return data, sha


def _classify(
    col: Collection,
    vec: Any,
    query: dict[str, Any],
    labels: list[str],
    top: int | None,
    templates: list[str] | None,
    lang: str | None,
) -> dict[str, Any]:
    import numpy as np

    from .. import zeroshot

    probs = zeroshot.classify(col.encoder, np.asarray(vec)[None], labels, templates=templates, lang=lang)[0]
    best = zeroshot.top_labels(probs[None], labels, k=top or len(labels))[0]
    return {
        "collection": col.name,
        "model": col.encoder_info.name,
        "query": query,
        "labels": [{"label": lab, "probability": round(p, 6)} for lab, p in best],
    }


__all__ = ["install"]
