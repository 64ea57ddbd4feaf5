"""The Milvus store: a collection's records on a Milvus server (a cluster in production, a
standalone server in tests), through ``pymilvus`` (``pip install 'clipseek[milvus]'``).

Layout on the server, per clipseek collection (one Milvus collection, named in the store
directory's ``milvus.json`` so that moving the data directory keeps the link):

- ``id`` VARCHAR primary key; ``vector`` FLOAT_VECTOR (HNSW, inner product on unit vectors = cosine);
- ``meta``: the metadata as JSON text, exactly as the local store writes it (round trip of every type);
- ``f``: a JSON document of the *filter forms* of the metadata, per field (keyed by the hex of the
  field name, so no name needs escaping): ``s`` the string forms, ``n`` the numbers (as their
  ``repr``, so equality is exact), ``n0``/``n1`` and ``t0``/``t1`` the least and greatest number and
  time (UTC seconds), and ``_k`` the hex names of every field the record has. Every condition of
  :mod:`clipseek.filters` maps onto one Milvus boolean expression on these: equality and sets are
  ``json_contains_any``, ``x > b`` for a list is ``max > b`` (some element is), ``x < b`` is
  ``min < b``; so filtering happens inside Milvus and is exact.
- a shared ``<prefix>_fields`` collection lists the field names each collection ever had (what
  ``fields()`` checks for presence: a field is listed while some record has it).

Search (see ``search``): exact for small candidate sets (up to ``exact_rows``, 1 MB of vectors:
the matching rows' vectors are scored here, as the local store scores), else Milvus's search with
an HNSW ``ef`` raised as the filter gets more selective, over-fetching ``2 * limit + 10``
candidates that are re-scored exactly from their stored vectors; knowhere itself scans a segment
exactly when a filter keeps under 7 % of it. Scores are the float32 dot products the local store
computes, so both stores agree to the last bit.

Consistency: every store call reads at a server timestamp taken when the call starts (the
"strong" level, default): what any client's upsert or delete had returned before is seen.
"session" (what this process wrote) and "bounded" are cheaper; see docs/scaling.md for the cost.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import uuid
from hashlib import sha1
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from .. import filters
from ..errors import BadFilter, BadVector, ClipseekError, StoreUnavailable
from ..filters import Condition
from ..types import Hit, Record, as_unit_vectors
from .base import VectorStore, metadata_json
from .topk import cosines, top_candidates

DEFAULT_URI = "http://localhost:19530"
DEFAULT_PREFIX = "clipseek_"
STATE_FILE = "milvus.json"
MAX_TEXT = 65535  # Milvus VARCHAR limit (bytes): ids and the metadata text
QUERY_WINDOW = 16384  # Milvus's largest query/search result (offset + limit)
ID_CHUNK = 1000  # ids per `id in [...]` expression
FILTER_EF = 40  # ef per result and per unit of 1/selectivity for filtered graph searches
LEVELS = ("strong", "session", "bounded", "eventually")

T = TypeVar("T")


# ------------------------------------------------------------------------------------ settings


def _config_file_settings() -> dict[str, Any]:
    """The ``[milvus]`` table of the configuration file: the one ``clipseek serve`` reads
    (``$CLIPSEEK_CONFIG``, else ``./clipseek.toml``), else ``$CLIPSEEK_HOME/clipseek.toml``; empty
    when there is none."""
    from ..paths import default_data_dir

    if os.environ.get("CLIPSEEK_CONFIG"):
        path = Path(os.environ["CLIPSEEK_CONFIG"]).expanduser()
    else:
        path = next((p for p in (Path("clipseek.toml"), default_data_dir() / "clipseek.toml") if p.is_file()), Path())
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ClipseekError(f"{path}: reading the configuration file needs Python 3.11 or `pip install tomli`") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ClipseekError(f"{path}: not a valid configuration file ({e})") from None
    table = data.get("milvus", {})
    if not isinstance(table, dict):
        raise ClipseekError(f"{path}: [milvus] must be a table")
    return table


def settings(
    uri: str | None = None, token: str | None = None, db: str | None = None, prefix: str | None = None
) -> dict[str, str]:
    """Where the server is: each of uri, token, db, prefix from the argument, else the environment
    (``CLIPSEEK_MILVUS_URI``, ``_TOKEN``, ``_DB``, ``_PREFIX``), else the configuration file's
    ``[milvus]`` table, else the default (``http://localhost:19530``, no token, ``default``, ``clipseek_``)."""
    given = {"uri": uri, "token": token, "db": db, "prefix": prefix}
    defaults = {"uri": DEFAULT_URI, "token": "", "db": "default", "prefix": DEFAULT_PREFIX}
    out: dict[str, str] = {}
    conf: dict[str, Any] | None = None
    for key, value in given.items():
        if value is None:
            value = os.environ.get(f"CLIPSEEK_MILVUS_{key.upper()}") or None
        if value is None:
            conf = _config_file_settings() if conf is None else conf
            value = conf.get(key)
        out[key] = str(defaults[key] if value is None else value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", out["prefix"]) and out["prefix"] != "":
        raise ClipseekError(f"bad Milvus collection prefix {out['prefix']!r}: letters, digits and '_'")
    return out


# ------------------------------------------------------------------------------------ expressions


def literal(s: str) -> str:
    """A Milvus expression string literal for ``s``: double quotes, with backslash, quote and
    control characters escaped (other characters, Chinese included, as they are)."""
    return json.dumps(s, ensure_ascii=False)


def _num(x: float) -> str:
    """The exact text of a number: the shortest repr of the double (``-0.0`` is ``0.0``)."""
    return repr(float(x) + 0.0)


def _key(name: str) -> str:
    """The JSON key of a metadata field in ``f``: hex of its UTF-8 (never needs escaping)."""
    return "k" + name.encode("utf-8").hex()


def filter_forms(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``f`` document of one record's metadata (see the module docstring)."""
    out: dict[str, Any] = {"_k": [_key(k) for k in meta]}
    for name, value in meta.items():
        atoms = filters.atoms(value)
        if not atoms:
            continue
        forms: dict[str, Any] = {}
        s = sorted({a.s for a in atoms if a.s is not None})
        n = [a.n for a in atoms if a.n is not None]
        t = [a.t for a in atoms if a.t is not None]
        if s:
            forms["s"] = s
        if n:
            forms["n"] = sorted({_num(x) for x in n})
            forms["n0"], forms["n1"] = float(min(n)), float(max(n))
        if t:
            forms["t0"], forms["t1"] = float(min(t)), float(max(t))
        out[_key(name)] = forms
    return out


def _range_bound(c: Condition) -> tuple[str, float]:
    a = filters.atom(c.value)
    if a is not None and a.n is not None:
        return "n", a.n
    if a is not None and a.t is not None:
        return "t", a.t
    raise BadFilter(f"range filter on {c.field!r} needs a number or an ISO-8601 time, got {c.value!r}")


def condition_expr(c: Condition) -> str:
    """One condition as a Milvus boolean expression on ``f`` (semantics of :mod:`clipseek.filters`)."""
    path = f'f["{_key(c.field)}"]'
    if c.op in ("eq", "in"):
        targets = filters.eq_targets(c)
        parts = []
        strings = sorted({t.s for t in targets if t.s is not None})
        numbers = sorted({_num(t.n) for t in targets if t.n is not None})
        if strings:
            parts.append(f'json_contains_any({path}["s"], [{", ".join(literal(s) for s in strings)}])')
        if numbers:
            parts.append(f'json_contains_any({path}["n"], [{", ".join(literal(n) for n in numbers)}])')
        return "(" + " or ".join(parts) + ")"
    slot, bound = _range_bound(c)
    side = "1" if c.op in ("gt", "gte") else "0"  # some element > b  <=>  the greatest is
    op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[c.op]
    return f'({path}["{slot}{side}"] {op} {_num(bound)})'


def where_expr(where: Sequence[Condition]) -> str:
    return " and ".join(condition_expr(c) for c in where)


def ids_expr(ids: Sequence[str]) -> str:
    return f"id in [{', '.join(literal(i) for i in ids)}]"


def _and(*parts: str) -> str:
    return " and ".join(f"({p})" for p in parts if p)


# ------------------------------------------------------------------------------------ errors


def _is_unavailable(e: BaseException) -> bool:
    """A server that cannot be reached or stopped answering (rather than a refused request)."""
    try:
        import grpc
        from pymilvus.exceptions import MilvusException, MilvusUnavailableException
    except ImportError:  # pragma: no cover
        return False
    if isinstance(e, (MilvusUnavailableException, grpc.RpcError)):
        return True
    if isinstance(e, MilvusException):
        text = str(e).lower()
        return any(w in text for w in ("unavailable", "connect", "deadline", "timeout", "not ready", "fail connecting"))
    return False


def _server_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn a pymilvus/gRPC failure into a ClipseekError that names the server."""

    @functools.wraps(fn)
    def wrapper(self: MilvusStore, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except ClipseekError:
            raise
        except Exception as e:  # noqa: BLE001 - only pymilvus/grpc errors are translated, the rest re-raised
            from pymilvus.exceptions import MilvusException

            if _is_unavailable(e):
                raise StoreUnavailable(
                    f"the Milvus server at {self.uri} is not answering ({_short(e)}); start it or check "
                    "--store-uri / CLIPSEEK_MILVUS_URI, then run the command again"
                ) from None
            if isinstance(e, MilvusException):
                raise ClipseekError(f"the Milvus server at {self.uri} refused {fn.__name__}: {_short(e)}") from None
            raise

    return wrapper


def _short(e: BaseException) -> str:
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):  # a gRPC error: its status and message, not its repr
        try:
            return f"{code().name}: {details()}"
        except Exception:  # noqa: BLE001
            pass
    text = getattr(e, "message", None) or str(e)
    text = " ".join(str(text).split())
    return text[:300]


def _server_errors_in(*methods: str) -> Callable[[type[T]], type[T]]:
    def wrap(cls: type[T]) -> type[T]:
        for m in methods:
            setattr(cls, m, _server_errors(getattr(cls, m)))
        return cls

    return wrap


def _import_pymilvus() -> None:
    """Import pymilvus without its import-time warning (2.3 imports setuptools' deprecated
    pkg_resources), which would otherwise greet every CLI user on stderr."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import pymilvus  # noqa: F401


def _rank(rows: list[dict[str, Any]], q: np.ndarray, limit: int, min_cosine: float | None) -> list[tuple[str, float, int]]:
    """(id, cosine, row) of the best ``limit`` rows for the unit query ``q``, scored from their
    stored vectors with the local store's arithmetic, by cosine descending, ties by id."""
    if not rows:
        return []
    V = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    keys, scores = top_candidates(np.arange(len(rows)), cosines(V, np.asarray(q, dtype=np.float32)), limit, min_cosine)
    pairs = sorted(((rows[k]["id"], float(c), k) for k, c in zip(keys.tolist(), scores.tolist())), key=lambda p: (-p[1], p[0]))
    return pairs[:limit]


# ------------------------------------------------------------------------------------ the store


@_server_errors_in(
    "upsert", "delete", "get", "count", "fields", "ids", "search", "neighbours", "values", "fingerprints", "stats"
)
class MilvusStore(VectorStore):
    """Milvus (a cluster or a standalone server; `pip install 'clipseek[milvus]'`).

    Options: ``uri``, ``token``, ``db``, ``prefix`` (see :func:`settings`), ``collection`` (the
    Milvus collection's name; default ``<prefix><clipseek name>_<8 hex>``), ``consistency``
    (``strong``, ``session``, ``bounded``, ``eventually``), ``index`` (``HNSW``, or ``FLAT``: exact,
    at the cost of a full scan per query), ``ef_search`` (HNSW ``ef`` floor),
    ``exact_rows`` (candidate sets up to this size are scored exactly here), ``M``,
    ``ef_construction``, ``shards`` (set when the collection is created), ``replicas`` (in-memory
    copies, for availability and throughput), ``timeout`` (seconds per server call), ``read_only``.
    """

    name = "milvus"
    persistent = True
    secret_options: ClassVar[frozenset[str]] = frozenset({"token"})

    def __init__(
        self,
        path: Path | str | None,
        dim: int,
        *,
        uri: str | None = None,
        token: str | None = None,
        db: str | None = None,
        prefix: str | None = None,
        collection: str | None = None,
        consistency: str = "strong",
        index: str = "HNSW",
        ef_search: int = 512,
        exact_rows: int | None = None,
        M: int = 16,
        ef_construction: int = 200,
        shards: int = 1,
        replicas: int = 1,
        timeout: float = 30.0,
        read_only: bool = False,
        **options: Any,
    ) -> None:
        if path is None:
            raise ClipseekError("the milvus store needs a directory for its milvus.json (path=None given)")
        super().__init__(Path(path), int(dim))  # refuses a dimension below 1
        self.path: Path = Path(path)
        if consistency.lower() not in LEVELS:
            raise ClipseekError(f"unknown Milvus consistency {consistency!r}; use one of {', '.join(LEVELS)}")
        self.consistency = consistency.lower()
        self.ef_search = int(ef_search)
        if index.upper() not in ("HNSW", "FLAT"):
            raise ClipseekError(f"unknown Milvus index {index!r}; use HNSW or FLAT (exact, for tests and small collections)")
        self.index = index.upper()
        # candidate sets scored here at most: 1 MB of vectors (512 rows at 512-d, 8192 at 32-d). Past
        # that, fetching them costs more than Milvus's own search (measured: 2000 rows of 512-d,
        # 306 ms against 50), which is exact anyway where a filter keeps under 7 % of a segment
        self.exact_rows = int(exact_rows) if exact_rows is not None else min(QUERY_WINDOW, max(64, 262_144 // self.dim))
        self.M, self.ef_construction, self.shards, self.replicas = int(M), int(ef_construction), int(shards), int(replicas)
        # whole seconds: pymilvus bounds its retries by a timeout only when it is an int (else 75 retries, ~4 min)
        self.timeout = max(1, math.ceil(float(timeout)))
        self.read_only = bool(read_only)
        state = self._read_state()
        conf = settings(uri or state.get("uri"), token, db or state.get("db"), prefix)
        self.uri, self.db, self.prefix = conf["uri"], conf["db"], conf["prefix"]
        self._token = conf["token"]
        self.collection_name = collection or state.get("collection") or self._derived_name()
        # the field-name registry, fixed when the collection is made (a later prefix must not hide it)
        self.fields_name = state.get("fields") or f"{self.prefix}_fields"
        if self.collection_name == self.fields_name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", self.collection_name):
            raise ClipseekError(f"bad Milvus collection name {self.collection_name!r}")
        self._alias = f"clipseek-{uuid.uuid4().hex}"
        self._closed = False
        self._last_write_ts = 0
        self._known_fields: set[str] = set()  # names this instance knows are in the fields registry
        self._open(state)

    # ------------------------------------------------------------------------------ opening

    def _read_state(self) -> dict[str, Any]:
        f = self.path / STATE_FILE
        if not f.is_file():
            return {}
        try:
            state = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or not isinstance(state.get("collection"), str):
                raise ValueError("no collection name")
        except (OSError, ValueError) as e:
            from ..errors import CollectionDamaged

            raise CollectionDamaged(f"{f}: not a valid Milvus store file ({e})") from None
        return state

    def _derived_name(self) -> str:
        label = self.path.parent.name if self.path.name.startswith("store") else self.path.name
        label = re.sub(r"[^A-Za-z0-9_]", "_", label)[:160]
        digest = sha1(str(self.path.resolve()).encode("utf-8")).hexdigest()[:8]
        return f"{self.prefix}{label}_{digest}"

    def _open(self, state: dict[str, Any]) -> None:
        try:
            _import_pymilvus()
            from pymilvus import connections

            # pymilvus logs every failed call and retry (with its reprs) as an error or warning:
            # its errors reach users as one StoreUnavailable/ClipseekError message instead
            log = logging.getLogger("pymilvus")
            if log.level == logging.NOTSET:
                log.setLevel(logging.CRITICAL)
        except ImportError:
            raise ClipseekError(
                "the milvus store needs pymilvus: pip install 'clipseek[milvus]'"
            ) from None
        self._connect(connections)
        try:
            self._ensure_collections(state)
        except BaseException:
            self.close()
            raise

    @_server_errors
    def _connect(self, connections: Any) -> None:
        kwargs: dict[str, Any] = {"uri": self.uri, "timeout": min(self.timeout, 10)}  # a dead address fails in 10 s
        if self._token:
            kwargs["token"] = self._token
        if self.db and self.db != "default":
            kwargs["db_name"] = self.db
        connections.connect(self._alias, **kwargs)

    @_server_errors
    def _ensure_collections(self, state: dict[str, Any]) -> None:
        from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, utility

        kw = {"using": self._alias, "timeout": self.timeout}
        exists = utility.has_collection(self.collection_name, **kw)
        if not exists and (self.read_only or state):
            raise ClipseekError(
                f"the Milvus collection {self.collection_name!r} is not on the server at {self.uri} (db {self.db!r})"
                + (": it was dropped there; delete this collection and index again" if state else "")
            )
        if exists:
            col = Collection(self.collection_name, using=self._alias)
            have = next((f.params.get("dim") for f in col.schema.fields if f.name == "vector"), None)
            if have is None or {f.name for f in col.schema.fields} != {"id", "vector", "meta", "f"}:
                raise ClipseekError(
                    f"the Milvus collection {self.collection_name!r} at {self.uri} was not made by clipseek; "
                    "give another collection name or prefix"
                )
            if int(have) != self.dim:
                raise BadVector(
                    f"the Milvus collection {self.collection_name!r} holds {have}-d vectors, not {self.dim}-d"
                )
        else:
            schema = CollectionSchema(
                [
                    FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=MAX_TEXT),
                    FieldSchema("vector", DataType.FLOAT_VECTOR, dim=self.dim),
                    FieldSchema("meta", DataType.VARCHAR, max_length=MAX_TEXT),
                    FieldSchema("f", DataType.JSON),
                ],
                description="clipseek collection",
            )
            col = Collection(
                self.collection_name, schema, using=self._alias, shards_num=self.shards, consistency_level="Strong",
                timeout=self.timeout,
            )
            params = {"M": self.M, "efConstruction": self.ef_construction} if self.index == "HNSW" else {}
            col.create_index(
                "vector", {"index_type": self.index, "metric_type": "IP", "params": params}, timeout=self.timeout
            )
        if getattr(utility.load_state(self.collection_name, **kw), "name", "") != "Loaded":
            col.load(replica_number=self.replicas, timeout=self.timeout)  # (a loaded one keeps its replicas)
        self._col = col
        if not utility.has_collection(self.fields_name, **kw):
            reg = Collection(
                self.fields_name,
                CollectionSchema(
                    [
                        FieldSchema("key", DataType.VARCHAR, is_primary=True, max_length=MAX_TEXT),
                        FieldSchema("coll", DataType.VARCHAR, max_length=256),
                        FieldSchema("name", DataType.VARCHAR, max_length=MAX_TEXT),
                        FieldSchema("v", DataType.FLOAT_VECTOR, dim=2),
                    ],
                    description="clipseek: the metadata field names of each collection",
                ),
                using=self._alias,
                consistency_level="Strong",
                timeout=self.timeout,
            )
            reg.create_index("v", {"index_type": "FLAT", "metric_type": "L2", "params": {}}, timeout=self.timeout)
        else:
            reg = Collection(self.fields_name, using=self._alias)
        reg.load(timeout=self.timeout)
        self._reg = reg
        if not state and not self.read_only:
            self.path.mkdir(parents=True, exist_ok=True)
            tmp = self.path / (STATE_FILE + ".tmp")
            tmp.write_text(
                json.dumps(
                    {"collection": self.collection_name, "fields": self.fields_name, "uri": self.uri, "db": self.db,
                     "dim": self.dim},
                    indent=2,
                )
            )
            os.replace(tmp, self.path / STATE_FILE)

    # ------------------------------------------------------------------------------ plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise ClipseekError(f"the milvus store {self.collection_name!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ClipseekError(f"collection store {self.collection_name!r} is open read-only")

    def _read_kw(self) -> dict[str, Any]:
        """Keyword arguments that make a series of reads see every write that returned before the
        call started (strong), or this process's writes (session), or what the server has (bounded)."""
        kw: dict[str, Any] = {"timeout": self.timeout}
        if self.consistency == "strong":
            ts = self._handler().alloc_timestamp(timeout=self.timeout)
            kw.update(consistency_level="Customized", guarantee_timestamp=ts)
        elif self.consistency == "session":
            kw.update(consistency_level="Customized", guarantee_timestamp=self._last_write_ts or 1)
        else:
            kw["consistency_level"] = self.consistency.capitalize()
        return kw

    def _handler(self) -> Any:
        from pymilvus import connections

        return connections._fetch_handler(self._alias)

    def _wrote(self, result: Any) -> None:
        ts = int(getattr(result, "timestamp", 0) or 0)
        if self.consistency == "session":
            # a delete's result carries no timestamp on 2.3: take one after it returned
            ts = ts or self._handler().alloc_timestamp(timeout=self.timeout)
        self._last_write_ts = max(self._last_write_ts, ts)

    def _query(self, expr: str, fields: list[str], kw: Mapping[str, Any], **extra: Any) -> list[dict[str, Any]]:
        return list(self._col.query(expr, output_fields=fields, **kw, **extra))

    def _count_expr(self, expr: str, kw: Mapping[str, Any]) -> int:
        rows = self._query(expr, ["count(*)"], kw)
        return int(rows[0]["count(*)"]) if rows else 0

    def _conditions(self, where: Sequence[Condition], kw: Mapping[str, Any]) -> str:
        """The expression of ``where``, after checking every field it names is present."""
        if not where:
            return ""
        filters.validate(where)
        for name in sorted({c.field for c in where}):
            if not self._has_field(name, kw):
                filters.check_fields([Condition(name, "eq", "")], self._fields(kw))
        return where_expr(where)

    def _has_field(self, name: str, kw: Mapping[str, Any]) -> bool:
        return bool(self._query(f'json_contains(f["_k"], "{_key(name)}")', ["id"], kw, limit=1))

    def _pages(self, expr: str, fields: list[str], kw: Mapping[str, Any], page: int = 5000) -> Iterator[list[dict[str, Any]]]:
        """All rows matching ``expr``, in pages of ids in ascending order, each resuming after the
        last id seen. Asked to reduce for an iterator, Milvus answers with the smallest ids of the
        matching rows, but may stop short of ``page`` before the end (where one segment's part
        ran out): only an empty page is the end."""
        last: str | None = None
        page = max(1, min(page, QUERY_WINDOW))
        while True:
            e = _and(expr, f"id > {literal(last)}" if last is not None else "")
            rows = self._query(e, fields, kw, limit=page, reduce_stop_for_best="True")
            if not rows:
                return
            rows.sort(key=lambda r: r["id"])
            yield rows
            last = rows[-1]["id"]

    # ------------------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[Record]) -> None:
        self._check_writable()
        if not records:
            return
        vecs = [as_unit_vectors(r.vector, self.dim)[0] for r in records]  # checks every row before any write
        latest: dict[str, tuple[np.ndarray, Record]] = {}
        for r, v in zip(records, vecs):
            latest[r.id] = (v, r)  # the same id twice: the last one wins
        ids, rows, metas, forms = [], [], [], []
        for rid, (v, r) in latest.items():
            if not isinstance(rid, str) or not rid or len(rid.encode("utf-8")) > MAX_TEXT:
                raise ClipseekError(f"bad record id {rid!r} for the milvus store: a non-empty string of at most {MAX_TEXT} bytes")
            meta = metadata_json(dict(r.metadata))
            if len(meta.encode("utf-8")) > MAX_TEXT:
                raise ClipseekError(f"record {rid!r}: its metadata is over {MAX_TEXT} bytes of JSON, the milvus store's limit")
            ids.append(rid)
            rows.append(v)
            metas.append(meta)
            forms.append(filter_forms(json.loads(meta)))
        self._register_fields({k for r in latest.values() for k in r[1].metadata})
        result = self._col.upsert([ids, np.stack(rows), metas, forms], timeout=self.timeout)
        if getattr(result, "err_count", 0):
            raise ClipseekError(f"the Milvus server at {self.uri} failed {result.err_count} of {len(ids)} upserts")
        self._wrote(result)

    def _register_fields(self, names: Iterable[str]) -> None:
        """Add field names to the registry before the records that carry them are written (a crash
        between the two leaves a name without records, which ``fields()`` does not list)."""
        new = sorted(set(names) - self._known_fields)
        if not new:
            return
        keys = [f"{self.collection_name}/{_key(n)}" for n in new]
        self._reg.upsert([keys, [self.collection_name] * len(new), new, np.zeros((len(new), 2), np.float32)],
                         timeout=self.timeout)
        self._known_fields.update(new)

    def delete(self, ids: Iterable[str]) -> int:
        self._check_writable()
        ids = list(dict.fromkeys(i for i in ids if isinstance(i, str)))
        if not ids:
            return 0
        kw = self._read_kw()
        gone = 0
        for i in range(0, len(ids), ID_CHUNK):
            chunk = ids[i : i + ID_CHUNK]
            existing = [r["id"] for r in self._query(ids_expr(chunk), ["id"], kw)]
            if existing:
                self._wrote(self._col.delete(ids_expr(existing), timeout=self.timeout))
                gone += len(existing)
        return gone

    # ------------------------------------------------------------------------------ reads

    def get(self, ids: Sequence[str]) -> list[Record | None]:
        self._check_open()
        ids = list(ids)
        want = list(dict.fromkeys(i for i in ids if isinstance(i, str)))
        found: dict[str, Record] = {}
        if want:
            kw = self._read_kw()
            for i in range(0, len(want), ID_CHUNK):
                for row in self._query(ids_expr(want[i : i + ID_CHUNK]), ["vector", "meta"], kw):
                    found[row["id"]] = Record(row["id"], np.asarray(row["vector"], dtype=np.float32), json.loads(row["meta"]))
        return [found.get(i) if isinstance(i, str) else None for i in ids]

    def count(self, where: Sequence[Condition] = ()) -> int:
        self._check_open()
        kw = self._read_kw()
        return self._count_expr(self._conditions(list(where), kw), kw)

    def fields(self) -> list[str]:
        self._check_open()
        return self._fields(self._read_kw())

    def _fields(self, kw: Mapping[str, Any]) -> list[str]:
        names = sorted(r["name"] for r in self._reg.query(f"coll == {literal(self.collection_name)}", output_fields=["name"], **kw))
        self._known_fields.update(names)
        return [n for n in names if self._has_field(n, kw)]

    def ids(self, where: Sequence[Condition] = ()) -> list[str]:
        self._check_open()
        kw = self._read_kw()
        expr = self._conditions(list(where), kw)
        return [r["id"] for rows in self._pages(expr, ["id"], kw) for r in rows]

    def values(self, key: str) -> dict[str, Any]:
        self._check_open()
        kw = self._read_kw()
        out: dict[str, Any] = {}
        for rows in self._pages(f'json_contains(f["_k"], "{_key(key)}")', ["meta"], kw):
            for r in rows:
                meta = json.loads(r["meta"])
                if key in meta:
                    out[r["id"]] = meta[key]
        return out

    def fingerprints(self) -> dict[str, str]:
        return {i: str(v) for i, v in self.values("_fingerprint").items()}

    # ------------------------------------------------------------------------------ search

    def search(
        self,
        vector: np.ndarray,
        limit: int = 10,
        where: Sequence[Condition] = (),
        min_cosine: float | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Hit]:
        """Exact for candidate sets up to ``exact_rows``; else HNSW with ``ef`` raised by the
        filter's selectivity and ``2 * limit`` candidates re-scored exactly (module docstring)."""
        self._check_open()
        q = as_unit_vectors(vector, self.dim)
        if q.shape[0] != 1:
            raise BadVector(f"search takes one query vector, got {q.shape[0]}")
        q = q[0]
        kw = self._read_kw()
        expr = self._conditions(list(where), kw)  # BadFilter before any other work
        limit = int(limit)
        if limit <= 0:
            return []
        excl = list(dict.fromkeys(e for e in exclude if isinstance(e, str)))
        full = _and(expr, f"id not in [{', '.join(literal(i) for i in excl)}]" if excl else "")
        m = self._count_expr(full, kw)
        if m == 0:
            return []
        if m <= self.exact_rows:
            rows = [r for page in self._pages(full, ["vector", "meta"], kw, page=QUERY_WINDOW) for r in page]
        else:
            rows = self._ann_candidates(q, limit, full, m, kw)
        return [Hit(i, c, json.loads(rows[k]["meta"]), score=c) for i, c, k in _rank(rows, q, limit, min_cosine)]

    def neighbours(
        self, ids: Sequence[str], limit: int, min_cosine: float | None = None
    ) -> list[list[tuple[str, float]]]:
        """Like ``search(own vector, exclude=[id])`` for each id, in one Milvus search per 256 ids
        (``clipseek dedup`` asks it for every record), or one scan here for small collections."""
        self._check_open()
        ids = list(ids)
        found: dict[str, list[tuple[str, float]]] = {}
        recs = [r for r in self.get(ids) if r is not None]
        if recs and limit > 0:
            kw = self._read_kw()
            total = self._count_expr("", kw)
            if total <= self.exact_rows:
                rows = [r for page in self._pages("", ["vector"], kw, page=QUERY_WINDOW) for r in page]
                for rec in recs:
                    others = [r for r in rows if r["id"] != rec.id]
                    found[rec.id] = [(i, c) for i, c, _k in _rank(others, rec.vector, limit, min_cosine)]
            else:
                k = min(total, limit + 11, QUERY_WINDOW)  # itself, and slack for ties at the cut
                for i in range(0, len(recs), 256):
                    part = recs[i : i + 256]
                    res = self._col.search(
                        [r.vector for r in part], "vector", {"metric_type": "IP", "params": {"ef": max(self.ef_search, k)}},
                        limit=k, output_fields=["vector"], **kw,
                    )
                    for rec, hits in zip(part, res):
                        rows = [{"id": h.id, "vector": h.entity.get("vector")} for h in hits if h.id != rec.id]
                        found[rec.id] = [(j, c) for j, c, _k in _rank(rows, rec.vector, limit, min_cosine)]
        return [list(found.get(i, [])) for i in ids]

    def _ann_candidates(
        self, q: np.ndarray, limit: int, expr: str, m: int, kw: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        total = self._count_expr("", kw) if expr else m
        k = min(m, 2 * limit + 10, QUERY_WINDOW)
        # a filter keeping a fraction s of the rows: ef = 40 * limit / s (4000 at 10 %, limit 10). The
        # graph walk passes through rows the filter drops; measured on 100k 512-d vectors, 8 * limit
        # / s still missed 1.2 % of the true top 10 at 10 %. Under about 7 % of a segment knowhere
        # scans it exactly instead.
        selectivity = m / max(total, 1)
        ef = min(QUERY_WINDOW * 2, max(self.ef_search, k, math.ceil(FILTER_EF * limit / selectivity) if expr else 0))
        res = self._col.search(
            [q], "vector", {"metric_type": "IP", "params": {"ef": ef}}, limit=k, expr=expr or None,
            output_fields=["vector", "meta"], **kw,
        )
        return [{"id": h.id, "vector": h.entity.get("vector"), "meta": h.entity.get("meta")} for h in res[0]]

    # ------------------------------------------------------------------------------ the rest

    def stats(self) -> dict[str, Any]:
        return {
            "store": self.name,
            "count": self.count(),
            "dim": self.dim,
            "uri": self.uri,
            "db": self.db,
            "collection": self.collection_name,
            "index": f"HNSW (M={self.M}, efConstruction={self.ef_construction})" if self.index == "HNSW" else self.index,
            "consistency": self.consistency,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            from pymilvus import connections

            connections.disconnect(self._alias)
        except Exception:  # noqa: BLE001 - closing never fails
            pass

    @classmethod
    def destroy(cls, path: Path | None, **options: Any) -> None:
        """Drop the server's collection (and its field names) that the store at ``path`` names;
        nothing when there is none."""
        if path is None or not (Path(path) / STATE_FILE).is_file():
            return
        st = cls.__new__(cls)
        st.path = Path(path)
        state = st._read_state()
        conf = settings(options.get("uri") or state.get("uri"), options.get("token"), options.get("db") or state.get("db"),
                        options.get("prefix"))
        st.uri, st.db, st.prefix, st._token = conf["uri"], conf["db"], conf["prefix"], conf["token"]
        st.timeout = max(1, math.ceil(float(options.get("timeout", 30))))
        st._alias, st._closed = f"clipseek-{uuid.uuid4().hex}", False
        st.collection_name = state["collection"]
        st.fields_name = state.get("fields") or f"{st.prefix}_fields"
        _import_pymilvus()
        from pymilvus import connections

        st._connect(connections)
        try:
            st._drop()
        finally:
            st.close()

    @_server_errors
    def _drop(self) -> None:
        from pymilvus import Collection, utility

        kw = {"using": self._alias, "timeout": self.timeout}
        if utility.has_collection(self.fields_name, **kw):
            reg = Collection(self.fields_name, using=self._alias)
            reg.load(timeout=self.timeout)
            reg.delete(f"coll == {literal(self.collection_name)}", timeout=self.timeout)
        if utility.has_collection(self.collection_name, **kw):
            utility.drop_collection(self.collection_name, **kw)


__all__ = ["MilvusStore", "condition_expr", "filter_forms", "literal", "settings"]
