"""The Pinecone-compatible API: code written for Pinecone's Python client runs against clipseek
with only the host changed::

    pc = Pinecone(api_key=KEY, host="http://127.0.0.1:8000/pinecone")      # control plane
    index = pc.Index(host="http://127.0.0.1:8000/pinecone/NAME")           # data plane (or pc.Index(NAME))

Each Pinecone index is a vector-only clipseek collection (created with a dimension, no model), so
the same records are reachable through ``/v1``; ``/pinecone`` lists only vector-only collections.

How Pinecone's notions map onto a collection:

- **Scores.** Only the ``cosine`` metric exists here; a match's ``score`` is the raw cosine,
  which is what a vector-only collection scores anyway and what Pinecone's cosine metric returns.
- **Values.** Stored vectors are L2-normalised on the way in (clipseek's invariant), so ``fetch``
  and ``query(include_values=True)`` return the unit vector, not the values sent.
- **Namespaces.** The same id may live in several namespaces, so a record of namespace ``ns``
  is stored under ``ns + "\\x1f" + id``; the default namespace (``""``, also spelled
  ``"__default__"``) keeps ids as given, and also holds records written through ``/v1``. Every
  record written here carries the hidden bookkeeping field ``_ns = "ns:" + ns`` (the prefix keeps
  namespaces such as ``1`` and ``1.0`` apart: filters compare text that reads as a number as a
  number), and a namespace is selected with a store-level condition on it (see :class:`Scope`).
- **Filters.** ``$eq``, ``$in``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$and`` and the implicit
  AND of fields translate to clipseek's filter language (:mod:`clipseek.filters`); ``$ne``,
  ``$nin``, ``$exists`` and ``$or`` have no exact equivalent there and are refused with a 400 that
  names the operator. A filter on a field no record has matches nothing (as in Pinecone), where
  ``/v1`` would call it a typo.
- **Errors** are Pinecone's shape, ``{"error": {"code": "NOT_FOUND", "message": ...}, "status": 404}``,
  which the client turns into ``NotFoundError``, ``ConflictError`` ... by status.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import filters
from ..engine import VECTOR_ONLY, Collection, SearchResult
from ..errors import ClipseekError, CollectionNotFound
from ..types import EncoderInfo, Hit, Record, as_unit_vectors
from .deps import Reader, State, Writer
from .errors import ApiError, status_of

log = logging.getLogger("clipseek.server")

NS_FIELD = "_ns"  # bookkeeping field: "ns:" + the namespace, on records of a non-default namespace
NS_PREFIX = "ns:"
DEFAULT_TAG = NS_PREFIX  # the _ns of a record written to the default namespace through this API
SEP = "\x1f"  # between a namespace and an id in a stored id; refused inside either
DEFAULT_NS_NAME = "__default__"  # how Pinecone's 2026-07 API names the default namespace
DENSE_FIELD = "_values"  # the field name Pinecone's client gives a legacy dimension= index
SIDE_FILE = "pinecone.json"  # per-collection Pinecone settings (field name, deletion protection, tags)
SUPPORTED_OPS = ("$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$and")
UNSUPPORTED_OPS = ("$ne", "$nin", "$exists", "$or")
LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000

_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    413: "OUT_OF_RANGE",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


class PineconeError(Exception):
    """An error answered in Pinecone's shape."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
        self.headers = headers or {}


def _bad(message: str) -> PineconeError:
    return PineconeError(400, message)


def error_response(exc: Exception) -> JSONResponse:
    """Any exception as Pinecone's error JSON, with the status clipseek gives it elsewhere."""
    if isinstance(exc, PineconeError):
        status, message, headers, code = exc.status, exc.message, exc.headers, exc.code
    elif isinstance(exc, ApiError):  # the access dependencies: 401 / 403 / 429
        status, message, headers, code = exc.status, exc.message, exc.headers, None
    elif isinstance(exc, ClipseekError):
        status, _ = status_of(exc)
        status = 400 if status == 415 else status
        message, headers, code = str(exc), {}, None
        if status >= 500:
            log.error("pinecone request failed: %s", exc)
    elif isinstance(exc, StarletteHTTPException):  # e.g. FastAPI's 400 for a body that is not JSON or UTF-8
        status, headers, code = exc.status_code, dict(exc.headers or {}), None
        message = exc.detail if isinstance(exc.detail, str) else "bad request"
    elif isinstance(exc, RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        status, message, headers, code = 400, "; ".join(parts) or "invalid request", {}, None
    else:
        log.exception("unexpected error in the Pinecone-compatible API")
        status, message, headers, code = 500, "internal server error (see the server log)", {}, None
    code = code or _CODES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
    body = {"error": {"code": code, "message": message}, "status": status}
    return JSONResponse(body, status_code=status, headers=headers or None)


class PineconeRoute(APIRoute):
    """Routes whose every failure (access checks and body validation included) is answered in
    Pinecone's error shape instead of clipseek's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def pinecone_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error becomes a Pinecone error response
                return error_response(exc)

        return pinecone_handler


# ----------------------------------------------------------------------------------- filters

def translate_filter(flt: Any) -> list[filters.Condition]:
    """A Pinecone metadata filter as clipseek conditions (all must hold), or a 400 naming what
    has no exact equivalent."""
    if flt is None:
        return []
    out: list[filters.Condition] = []
    _translate(flt, out)
    try:
        filters.validate(out)
    except ClipseekError as e:
        raise _bad(f"bad filter: {e}") from None
    return out


def _unsupported(op: str) -> PineconeError:
    return _bad(
        f"filter operator {op!r} is not supported by clipseek's Pinecone-compatible API "
        f"(supported: {', '.join(SUPPORTED_OPS)}, and fields side by side, which must all match)"
    )


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))


def _translate(obj: Any, out: list[filters.Condition]) -> None:
    if not isinstance(obj, dict):
        raise _bad(f"a filter is a JSON object, got {json.dumps(obj)[:100]}")
    for key, val in obj.items():
        if key == "$and":
            if not isinstance(val, list) or not val:
                raise _bad("'$and' takes a non-empty list of filters")
            for part in val:
                _translate(part, out)
        elif key in UNSUPPORTED_OPS:
            raise _unsupported(key)
        elif key.startswith("$"):
            raise _bad(f"unknown filter operator {key!r} (supported: {', '.join(SUPPORTED_OPS)})")
        elif key.startswith("_"):
            raise _bad(f"metadata field {key!r}: names starting with '_' are reserved for clipseek's bookkeeping")
        elif isinstance(val, dict):
            if not val:
                raise _bad(f"empty condition for field {key!r}")
            for op, arg in val.items():
                out.append(_condition(key, op, arg))
        elif _scalar(val):
            out.append(filters.Condition(key, "eq", val))
        else:
            raise _bad(f"filter on {key!r}: give a value or an operator object such as {{\"$in\": [...]}}, got {json.dumps(val)[:100]}")


def _condition(field: str, op: str, arg: Any) -> filters.Condition:
    if op in UNSUPPORTED_OPS:
        raise _unsupported(op)
    if op == "$eq":
        if not _scalar(arg):
            raise _bad(f"'$eq' on {field!r} takes a string, number or boolean, got {json.dumps(arg)[:100]}")
        return filters.Condition(field, "eq", arg)
    if op == "$in":
        if not isinstance(arg, list) or not arg or not all(_scalar(a) for a in arg):
            raise _bad(f"'$in' on {field!r} takes a non-empty list of strings, numbers or booleans")
        return filters.Condition(field, "in", tuple(arg))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(arg, bool) or not _scalar(arg):
            raise _bad(f"{op!r} on {field!r} takes a number (or an ISO-8601 time), got {json.dumps(arg)[:100]}")
        return filters.Condition(field, op[1:], arg)
    raise _bad(f"unknown filter operator {op!r} on field {field!r} (supported: {', '.join(SUPPORTED_OPS)})")


# ----------------------------------------------------------------------------- namespaces, ids

def _namespace(ns: Any) -> str:
    """The namespace a request names; "" for the default one."""
    if ns is None:
        return ""
    if not isinstance(ns, str):
        raise _bad(f"namespace must be a string, got {json.dumps(ns)[:50]}")
    if ns == DEFAULT_NS_NAME:
        return ""
    if SEP in ns or len(ns) > 512:
        raise _bad("bad namespace: at most 512 characters, without the control character U+001F")
    return ns


def _check_id(i: Any) -> str:
    if not isinstance(i, str) or not i or len(i) > 512 or SEP in i:
        raise _bad(f"bad vector id {json.dumps(i)[:80]}: a non-empty string of at most 512 characters, without U+001F")
    return i


def _stored_id(ns: str, i: str) -> str:
    return f"{ns}{SEP}{i}" if ns else i


def _user_id(ns: str, stored: str) -> str:
    return stored[len(ns) + 1 :] if ns else stored


def _public(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if not k.startswith("_")}


def _check_metadata(meta: Any, where: str) -> dict[str, Any]:
    """Pinecone's metadata rules: an object of strings, numbers, booleans and lists of strings;
    a null value drops the key (as the client does)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise _bad(f"{where}: metadata must be an object")
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if not k or k.startswith("_") or k.startswith("$"):
            raise _bad(f"{where}: bad metadata field name {k!r} (names starting with '_' are clipseek's own, '$' Pinecone's operators)")
        if v is None:
            continue
        if isinstance(v, list):
            if not all(isinstance(x, str) for x in v):
                raise _bad(f"{where}: metadata field {k!r}: a list must hold strings only")
        elif not _scalar(v):
            raise _bad(f"{where}: metadata field {k!r} must be a string, number, boolean or list of strings")
        out[k] = v
    return out


class NamespaceTags:
    """Per collection, every ``_ns`` value its records may hold: read from the store once, then
    kept by this process's own writes (the tag is added before the records are written, so the set
    is never smaller than what the store holds; a namespace emptied through ``/v1`` leaves a stale
    tag, which costs speed, never correctness). Only Pinecone writes set ``_ns``: ``/v1`` refuses
    '_' fields, and a server holds its collections' writer lock, so no other process writes them."""

    def __init__(self) -> None:
        self._tags: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def get(self, col: Collection) -> frozenset[str]:
        with self._lock:
            if col.name not in self._tags:
                known = NS_FIELD in col.store.fields()
                self._tags[col.name] = {str(t) for t in col.store.values(NS_FIELD).values()} if known else set()
            return frozenset(self._tags[col.name])

    def add(self, col: Collection, tag: str) -> None:
        self.get(col)
        with self._lock:
            self._tags[col.name].add(tag)

    def prune(self, col: Collection, tag: str) -> None:
        """Forget ``tag`` when no record holds it any more (after a delete in its namespace)."""
        if tag != DEFAULT_TAG and NS_FIELD in col.store.fields() and col.store.count([filters.Condition(NS_FIELD, "eq", tag)]) == 0:
            with self._lock:
                self._tags.get(col.name, set()).discard(tag)

    def forget(self, name: str) -> None:
        with self._lock:
            self._tags.pop(name, None)


class Scope:
    """One namespace of one index: how to select its records in the store."""

    def __init__(self, col: Collection, ns: str, tags: frozenset[str]) -> None:
        self.col = col
        self.store = col.store
        self.ns = ns
        self.tags = tags

    def where(self, conds: list[filters.Condition]) -> tuple[list[filters.Condition], list[str]] | None:
        """(store conditions, ids to exclude) selecting ``conds`` in this namespace; None when
        nothing can match (a field or a namespace that no record has).

        The default namespace is every record without a namespace: no condition at all while no
        other namespace exists (the common case), ``_ns = DEFAULT_TAG`` while every record carries
        a tag, else (records written through ``/v1`` next to namespaces) the namespaced ids are
        excluded, which costs time in proportion to their number."""
        known = set(self.store.fields())
        if any(c.field not in known for c in conds):
            return None
        if self.ns:
            if NS_FIELD not in known:
                return None
            return [*conds, filters.Condition(NS_FIELD, "eq", NS_PREFIX + self.ns)], []
        other = self.tags - {DEFAULT_TAG}
        if NS_FIELD not in known or not other:
            return list(conds), []
        if self.store.count([filters.Condition(NS_FIELD, "in", tuple(sorted(self.tags)))]) == self.store.count():
            return [*conds, filters.Condition(NS_FIELD, "eq", DEFAULT_TAG)], []
        return list(conds), list(self.store.ids([filters.Condition(NS_FIELD, "in", tuple(sorted(other)))]))

    def ids(self, conds: Sequence[filters.Condition] = ()) -> list[str]:
        sel = self.where(list(conds))
        if sel is None:
            return []
        where, exclude = sel
        found = self.store.ids(where)
        if exclude:
            drop = set(exclude)
            found = [i for i in found if i not in drop]
        return list(found)

    def count(self, conds: Sequence[filters.Condition] = ()) -> int:
        sel = self.where(list(conds))
        if sel is None:
            return 0
        where, exclude = sel
        n = self.store.count(where)
        if exclude:
            other = tuple(sorted(self.tags - {DEFAULT_TAG}))
            n -= self.store.count([*conds, filters.Condition(NS_FIELD, "in", other)]) if conds else len(exclude)
        return n


# ----------------------------------------------------------------------------- the index model

@dataclass(frozen=True)
class IndexInfo:
    """What the control plane says about an index, read from its collection's files without
    opening its store (so listing never waits on, or fails for, a collection another process writes)."""

    name: str
    dim: int
    path: Path


def _side(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / SIDE_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_side(path: Path, data: dict[str, Any]) -> None:
    tmp = path / (SIDE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path / SIDE_FILE)


def _host(request: Request, name: str) -> str:
    """The data-plane URL of an index as the client will call it (scheme included: the client
    reads a bare host as https)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{request.url.scheme}://{host}{root}/pinecone/{name}"


def describe(request: Request, info: IndexInfo) -> dict[str, Any]:
    side = _side(info.path)
    return {
        "name": info.name,
        "host": _host(request, info.name),
        "status": {"ready": True, "state": "Ready"},
        "schema": {
            "fields": {
                side.get("field", DENSE_FIELD): {
                    "type": "dense_vector",
                    "dimension": info.dim,
                    "metric": "cosine",
                }
            }
        },
        "deployment": side.get("deployment") or {"deployment_type": "managed", "cloud": "clipseek", "region": "local"},
        "deletion_protection": side.get("deletion_protection", "disabled"),
        "tags": side.get("tags"),
    }


def _dense_field(body: dict[str, Any]) -> tuple[str, int, str]:
    """(field name, dimension, metric) of a create request: the 2026-07 ``schema`` or the older
    top-level ``dimension``/``metric``."""
    schema = body.get("schema")
    if schema is None:
        dim, metric = body.get("dimension"), body.get("metric") or "cosine"
        if body.get("vector_type", "dense") != "dense":
            raise _bad("only dense indexes are supported (vector_type 'dense')")
        field = DENSE_FIELD
    else:
        fields = schema.get("fields") if isinstance(schema, dict) else None
        if not isinstance(fields, dict) or not fields:
            raise _bad("schema must be {\"fields\": {NAME: {\"type\": \"dense_vector\", \"dimension\": D, \"metric\": \"cosine\"}}}")
        dense = [(k, v) for k, v in fields.items() if isinstance(v, dict) and v.get("type") == "dense_vector"]
        other = [k for k, v in fields.items() if not (isinstance(v, dict) and v.get("type") == "dense_vector")]
        if other:
            kinds = sorted({str(fields[k].get("type")) if isinstance(fields[k], dict) else "?" for k in other})
            raise _bad(f"schema field types {', '.join(kinds)} are not supported: a clipseek index holds one dense_vector field")
        if len(dense) != 1:
            raise _bad(f"a clipseek index holds exactly one dense_vector field, got {len(dense)}")
        field, spec = dense[0]
        dim, metric = spec.get("dimension"), spec.get("metric") or "cosine"
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
        raise _bad(f"bad dimension {dim!r}: a whole number from 1 to 65536")
    if str(metric).lower() != "cosine":
        raise _bad(
            f"metric {metric!r} is not supported: clipseek indexes use the cosine metric "
            "(vectors are stored L2-normalised and scored by their cosine)"
        )
    return field, dim, "cosine"


# ----------------------------------------------------------------------------------- install

def install(app: FastAPI, state: State) -> None:
    control = APIRouter(prefix="/pinecone", route_class=PineconeRoute, tags=["pinecone"])
    data = APIRouter(prefix="/pinecone/{index}", route_class=PineconeRoute, tags=["pinecone"])
    lock = threading.RLock()  # create/delete of indexes, and read-modify-write updates
    ns_tags = NamespaceTags()

    def info_of(name: str) -> IndexInfo:
        if not state.engine.exists(name):
            raise PineconeError(404, f"index {name!r} not found")
        enc = EncoderInfo.from_dict(state.engine._config(name)["encoder"])
        if enc.name != VECTOR_ONLY:
            raise PineconeError(
                404,
                f"index {name!r} not found: {name!r} is a clipseek collection built with the model "
                f"{enc.name!r}; the Pinecone-compatible API serves vector-only collections",
            )
        return IndexInfo(name, enc.dim, state.engine.collections_dir / name)

    def index_of(name: str) -> Collection:
        """The open collection behind a data-plane request."""
        try:
            col = state.collection(name)
        except CollectionNotFound:
            raise PineconeError(404, f"index {name!r} not found") from None
        if col.encoder_info.name != VECTOR_ONLY:
            info_of(name)  # raises the 404 that names the model
        return col

    def max_top() -> int:
        return state.settings.max_top

    # ------------------------------------------------------------------ control plane

    @control.get("/indexes", summary="List indexes (vector-only collections)")
    def list_indexes(request: Request, key: Reader) -> dict[str, Any]:
        out = []
        for name in state.engine.names():
            try:
                out.append(describe(request, info_of(name)))
            except (PineconeError, ClipseekError):
                continue  # a model's collection, or a damaged one (reported by /v1), is no index
        return {"indexes": out}

    @control.post("/indexes", status_code=201, summary="Create an index (a vector-only collection)")
    def create_index(request: Request, key: Writer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("name is required")
        field, dim, _metric = _dense_field(body)
        protection = body.get("deletion_protection") or "disabled"
        if protection not in ("enabled", "disabled"):
            raise _bad(f"deletion_protection must be 'enabled' or 'disabled', got {protection!r}")
        tags = body.get("tags")
        if tags is not None and not isinstance(tags, dict):
            raise _bad("tags must be an object of strings")
        deployment = body.get("deployment") or body.get("spec")
        with lock, state._lock:
            if state.engine.exists(name):
                raise PineconeError(409, f"index {name!r} already exists")
            col = state.engine.create(name, dim=dim)
            ns_tags.forget(name)
            _write_side(
                col.path,
                {
                    "field": field,
                    "deletion_protection": protection,
                    "tags": tags or None,
                    "deployment": deployment if isinstance(deployment, dict) and "deployment_type" in deployment else None,
                },
            )
        return describe(request, IndexInfo(name, dim, col.path))

    @control.get("/indexes/{name}", summary="Describe an index")
    def describe_index(request: Request, name: str, key: Reader) -> dict[str, Any]:
        return describe(request, info_of(name))

    @control.patch("/indexes/{name}", summary="Configure an index (deletion protection, tags)")
    def configure_index(request: Request, name: str, key: Writer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        info = info_of(name)
        other = sorted(set(body) - {"deletion_protection", "tags"})
        if other:
            raise _bad(f"cannot configure {', '.join(other)} here: only deletion_protection and tags")
        with lock:
            side = _side(info.path)
            if "deletion_protection" in body:
                if body["deletion_protection"] not in ("enabled", "disabled"):
                    raise _bad("deletion_protection must be 'enabled' or 'disabled'")
                side["deletion_protection"] = body["deletion_protection"]
            if isinstance(body.get("tags"), dict):
                tags = {**(side.get("tags") or {}), **body["tags"]}
                side["tags"] = {k: v for k, v in tags.items() if v != ""} or None
            _write_side(info.path, side)
        return describe(request, info)

    @control.delete("/indexes/{name}", status_code=202, summary="Delete an index and its records")
    def delete_index(name: str, key: Writer) -> Response:
        info = info_of(name)
        if _side(info.path).get("deletion_protection") == "enabled":
            raise PineconeError(403, f"index {name!r} has deletion protection enabled: disable it with configure_index first", "FORBIDDEN")
        with lock, state._lock:
            state.engine.drop(name)
            ns_tags.forget(name)
        return Response(status_code=202)

    # ------------------------------------------------------------------ data plane

    @data.post("/vectors/upsert", summary="Insert or replace vectors")
    def upsert(index: str, key: Writer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        col = index_of(index)
        ns = _namespace(body.get("namespace"))
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise _bad("vectors must be a non-empty list of {id, values, metadata}")
        if len(vectors) > state.settings.max_batch:
            raise _bad(f"{len(vectors)} vectors in one upsert: at most {state.settings.max_batch} (send batches)")
        ids, rows, metas = [], [], []
        for n, v in enumerate(vectors):
            if not isinstance(v, dict):
                raise _bad(f"vectors[{n}] must be an object {{id, values, metadata}}")
            vid = _check_id(v.get("id"))
            if v.get("sparseValues") or v.get("sparse_values"):
                raise _bad(f"vector {vid!r}: sparse values are not supported (dense vectors only)")
            values = v.get("values")
            if not isinstance(values, list) or not values:
                raise _bad(f"vector {vid!r}: values must be a non-empty list of numbers")
            if len(values) != col.encoder_info.dim:
                raise _bad(f"vector {vid!r}: dimension {len(values)} does not match the index's dimension {col.encoder_info.dim}")
            ids.append(vid)
            rows.append(values)
            metas.append(_check_metadata(v.get("metadata"), f"vector {vid!r}"))
        try:
            unit = as_unit_vectors(rows, col.encoder_info.dim)
        except ClipseekError as e:
            raise _bad(f"bad vector values: {e}") from None
        tag = NS_PREFIX + ns  # the default namespace is tagged too, so that it can be selected by a condition
        last: dict[str, Record] = {}
        for vid, vec, meta in zip(ids, unit, metas):
            last[vid] = Record(_stored_id(ns, vid), vec, {**meta, NS_FIELD: tag})
        ns_tags.add(col, tag)  # before the write: the cached tags are never fewer than the stored ones
        col.store.upsert(list(last.values()))
        col.store.flush()
        state.emit("records_written", collection=col.name, count=len(last))
        return {"upsertedCount": len(ids)}

    @data.post("/query", summary="Nearest vectors by cosine")
    def query(index: str, key: Reader, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        t0 = time.perf_counter()
        col = index_of(index)
        ns = _namespace(body.get("namespace"))
        top = body.get("topK", body.get("top_k"))
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise _bad(f"topK must be a whole number of at least 1, got {json.dumps(top)}")
        if top > max_top():
            raise _bad(f"topK {top} is over this server's limit of {max_top()} (setting max_top)")
        if body.get("sparseVector") or body.get("sparse_vector"):
            raise _bad("sparse vectors are not supported (dense vectors only)")
        conds = translate_filter(body.get("filter"))
        scope = Scope(col, ns, ns_tags.get(col))
        vector, qid = body.get("vector"), body.get("id")
        if (vector is None) == (qid is None):
            raise _bad("give exactly one of vector and id")
        matches: list[dict[str, Any]] = []
        hits: list[Hit] = []
        q: np.ndarray | None = None
        if qid is not None:
            rec = col.store.get([_stored_id(ns, _check_id(qid))])[0]
            q = None if rec is None else rec.vector
        else:
            if not isinstance(vector, list) or not vector:
                raise _bad("vector must be a non-empty list of numbers")
            if len(vector) != col.encoder_info.dim:
                raise _bad(f"query vector dimension {len(vector)} does not match the index's dimension {col.encoder_info.dim}")
            try:
                q = as_unit_vectors(vector, col.encoder_info.dim)[0]
            except ClipseekError as e:
                raise _bad(f"bad query vector: {e}") from None
        sel = scope.where(conds) if q is not None else None
        t1 = time.perf_counter()
        if q is not None and sel is not None:
            where, exclude = sel
            hits = col.store.search(q, limit=top, where=where, exclude=exclude)
            values = col.store.get([h.id for h in hits]) if body.get("includeValues") else [None] * len(hits)
            for h, rec in zip(hits, values):
                m: dict[str, Any] = {"id": _user_id(ns, h.id), "score": float(h.cosine)}
                if rec is not None:
                    m["values"] = [float(x) for x in rec.vector]
                if body.get("includeMetadata"):
                    m["metadata"] = _public(h.metadata)
                matches.append(m)
        t2 = time.perf_counter()
        for h in hits:
            h.score = h.cosine
            h.id = _user_id(ns, h.id)
            h.metadata = _public(h.metadata)
        state.emit(
            "search",
            collection=col.name,
            result=SearchResult(
                collection=col.name,
                query={"kind": "vector" if qid is None else "like", "api": "pinecone"},
                hits=hits,
                took_ms=(t2 - t0) * 1000,
                model=col.encoder_info.name,
                where=conds,
                search_ms=(t2 - t1) * 1000,
            ),
        )
        return {"matches": matches, "namespace": ns, "usage": {"readUnits": 1}}

    @data.get("/vectors/fetch", summary="Vectors and metadata by id")
    def fetch(
        index: str,
        key: Reader,
        ids: Annotated[list[str], Query()],
        namespace: str = "",
    ) -> dict[str, Any]:
        col = index_of(index)
        ns = _namespace(namespace)
        wanted = [_check_id(i) for i in ids]
        if len(wanted) > state.settings.max_batch:
            raise _bad(f"{len(wanted)} ids in one fetch: at most {state.settings.max_batch}")
        out: dict[str, Any] = {}
        for vid, rec in zip(wanted, col.store.get([_stored_id(ns, i) for i in wanted])):
            if rec is not None:
                out[vid] = {"id": vid, "values": [float(x) for x in rec.vector], "metadata": _public(rec.metadata)}
        return {"vectors": out, "namespace": ns, "usage": {"readUnits": 1}}

    @data.post("/vectors/delete", summary="Delete vectors by id, by filter, or all in a namespace")
    def delete(index: str, key: Writer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        col = index_of(index)
        ns = _namespace(body.get("namespace"))
        ids, delete_all, flt = body.get("ids"), bool(body.get("deleteAll") or body.get("delete_all")), body.get("filter")
        given = sum([ids is not None, delete_all, flt is not None])
        if given != 1:
            raise _bad("give exactly one of ids, deleteAll and filter")
        scope = Scope(col, ns, ns_tags.get(col))
        if ids is not None:
            if not isinstance(ids, list):
                raise _bad("ids must be a list of strings")
            targets = [_stored_id(ns, _check_id(i)) for i in ids]
        elif delete_all:
            targets = scope.ids()
        else:
            conds = translate_filter(flt)
            if not conds:
                raise _bad("an empty filter would delete everything: use deleteAll")
            targets = scope.ids(conds)
        if targets:
            col.store.delete(targets)
            col.store.flush()
            ns_tags.prune(col, NS_PREFIX + ns)
        return {}

    @data.post("/vectors/update", summary="Change one vector's values or metadata, or the metadata of the filter's matches")
    def update(index: str, key: Writer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        col = index_of(index)
        ns = _namespace(body.get("namespace"))
        if body.get("sparseValues"):
            raise _bad("sparse values are not supported (dense vectors only)")
        vid, flt, values = body.get("id"), body.get("filter"), body.get("values")
        set_meta = _check_metadata(body.get("setMetadata"), "setMetadata") if body.get("setMetadata") is not None else None
        if (vid is None) == (flt is None):
            raise _bad("give exactly one of id and filter")
        if flt is not None:
            if values is not None:
                raise _bad("values can be updated by id only")
            if not set_meta:
                raise _bad("an update by filter needs setMetadata")
            conds = translate_filter(flt)
            if not conds:
                raise _bad("an update by filter needs a non-empty filter")
            with lock:
                targets = Scope(col, ns, ns_tags.get(col)).ids(conds)
                if not body.get("dryRun") and targets:
                    col.store.update_metadata({t: set_meta for t in targets})
                    col.store.flush()
            return {"matchedRecords": len(targets)}
        stored = _stored_id(ns, _check_id(vid))
        if values is not None and (not isinstance(values, list) or len(values) != col.encoder_info.dim):
            raise _bad(f"values must be a list of {col.encoder_info.dim} numbers")
        with lock:
            rec = col.store.get([stored])[0]
            if rec is None:
                return {"matchedRecords": 0}
            if body.get("dryRun"):
                return {"matchedRecords": 1}
            if values is not None:
                try:
                    vec = as_unit_vectors(values, col.encoder_info.dim)[0]
                except ClipseekError as e:
                    raise _bad(f"bad vector values: {e}") from None
                col.store.upsert([Record(stored, vec, {**rec.metadata, **(set_meta or {})})])
            elif set_meta:
                col.store.update_metadata({stored: set_meta})
            col.store.flush()
        return {"matchedRecords": 1}

    @data.get("/vectors/list", summary="Vector ids of a namespace, by prefix, a page at a time")
    def list_ids(
        index: str,
        key: Reader,
        namespace: str = "",
        prefix: str = "",
        limit: int = LIST_DEFAULT_LIMIT,
        paginationToken: str | None = None,  # noqa: N803 - the client's parameter name
    ) -> dict[str, Any]:
        col = index_of(index)
        ns = _namespace(namespace)
        if not 1 <= limit <= LIST_MAX_LIMIT:
            raise _bad(f"limit must be from 1 to {LIST_MAX_LIMIT}")
        after = _decode_token(paginationToken) if paginationToken else None
        ids = sorted(u for u in (_user_id(ns, s) for s in Scope(col, ns, ns_tags.get(col)).ids()) if u.startswith(prefix))
        if after is not None:
            ids = [i for i in ids if i > after]
        page = ids[:limit]
        out: dict[str, Any] = {"vectors": [{"id": i} for i in page], "namespace": ns, "usage": {"readUnits": 1}}
        if len(ids) > limit:
            out["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return out

    @data.post("/describe_index_stats", summary="Vector counts per namespace, dimension, fullness")
    def describe_index_stats(index: str, key: Reader, body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
        col = index_of(index)
        conds = translate_filter((body or {}).get("filter") or None)
        counts = _namespace_counts(col, ns_tags.get(col), conds)
        return {
            "namespaces": {(ns or DEFAULT_NS_NAME): {"vectorCount": n} for ns, n in sorted(counts.items()) if n > 0},
            "dimension": col.encoder_info.dim,
            "indexFullness": 0.0,
            "totalVectorCount": sum(counts.values()),
            "metric": "cosine",
            "vectorType": "dense",
        }

    @data.get("/namespaces", summary="The index's namespaces with their record counts")
    def list_namespaces(index: str, key: Reader) -> dict[str, Any]:
        col = index_of(index)
        counts = _namespace_counts(col, ns_tags.get(col), [])
        names = [{"name": ns or DEFAULT_NS_NAME, "record_count": n} for ns, n in sorted(counts.items()) if n > 0]
        return {"namespaces": names, "total_count": len(names)}

    @data.get("/namespaces/{namespace}", summary="One namespace and its record count")
    def describe_namespace(index: str, namespace: str, key: Reader) -> dict[str, Any]:
        col = index_of(index)
        ns = _namespace(namespace)
        n = Scope(col, ns, ns_tags.get(col)).count()
        if n == 0:
            raise PineconeError(404, f"namespace {namespace!r} not found in index {index!r}")
        return {"name": ns or DEFAULT_NS_NAME, "record_count": n}

    @data.delete("/namespaces/{namespace}", status_code=202, summary="Delete a namespace and its records")
    def delete_namespace(index: str, namespace: str, key: Writer) -> Response:
        col = index_of(index)
        ns = _namespace(namespace)
        targets = Scope(col, ns, ns_tags.get(col)).ids()
        if not targets:
            raise PineconeError(404, f"namespace {namespace!r} not found in index {index!r}")
        col.store.delete(targets)
        col.store.flush()
        ns_tags.prune(col, NS_PREFIX + ns)
        return Response(status_code=202)

    app.include_router(control)
    app.include_router(data)


def _namespace_counts(col: Collection, tags: frozenset[str], conds: list[filters.Condition]) -> dict[str, int]:
    """namespace ("" = default) -> records matching ``conds`` there."""
    if NS_FIELD not in col.store.fields():
        return {"": Scope(col, "", frozenset()).count(conds)}
    stored = col.store.values(NS_FIELD)
    counts: Counter[str] = Counter()
    if not conds:
        counts.update(str(t)[len(NS_PREFIX) :] for t in stored.values())
        counts[""] += col.store.count() - len(stored)
        return dict(counts)
    for tag in {str(t) for t in stored.values()} - {DEFAULT_TAG}:
        counts[tag[len(NS_PREFIX) :]] = Scope(col, tag[len(NS_PREFIX) :], tags).count(conds)
    counts[""] = Scope(col, "", tags).count(conds)
    return dict(counts)


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad("bad paginationToken: pass back the pagination.next of the previous page") from None


__all__ = ["install", "translate_filter"]
