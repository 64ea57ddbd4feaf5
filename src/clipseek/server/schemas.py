"""Request and response bodies of the ``/v1`` REST API (pydantic models), so ``/openapi.json``
documents them and malformed JSON is a 422 before any route runs. The contract in words is
``docs/api.md``."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

# The CLI's filter language as JSON: {"field": value}, {"field": [v1, v2]},
# {"field": {"gte": 1, "lt": 5}} (a leading "$" on an operator is accepted), or a list of
# such objects and CLI strings ("year>=2020"). See clipseek.filters.
Filter = Union[dict[str, Any], list[Union[str, dict[str, Any]]], str]
Metadata = dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not silently ignored


# ------------------------------------------------------------------------------------ collections


class ModelInfo(BaseModel):
    name: str = Field(description="the encoder's name ('vectors' for a vector-only collection)")
    model_id: str
    dim: int
    version: str


class CollectionInfo(BaseModel):
    name: str
    model: ModelInfo
    vector_only: bool = Field(description="created with a dimension and no model: searched by vector or id only")
    store: str
    count: Optional[int] = None
    fields: list[str] = Field(description="metadata fields records have (what `where` may filter on)")
    disk_bytes: int
    created_at: Optional[str] = None
    last_run: Optional[dict[str, Any]] = Field(None, description="what the last index run did")
    job: Optional[str] = Field(None, description="id of the ingest job running on it, if any")


class Unavailable(BaseModel):
    name: str
    error: str


class CollectionList(BaseModel):
    collections: list[CollectionInfo]
    unavailable: list[Unavailable] = Field(
        default_factory=list, description="collections that cannot be opened now (damaged, or locked by another process)"
    )


class CreateCollection(_Body):
    name: str = Field(description="letters, digits, '.', '_' or '-' (at most 64)", examples=["photos"])
    model: Optional[str] = Field(
        None, description="encoder name, preset, hub id or model folder (default: the server's configured model)"
    )
    dimension: Optional[int] = Field(
        None, ge=1, le=65536, description="create a vector-only collection of this dimension (no model)"
    )
    store: Optional[str] = Field(None, description="vector store (default: local)")


class Deleted(BaseModel):
    deleted: str


# ------------------------------------------------------------------------------------ records


class RecordIn(_Body):
    id: Optional[str] = Field(
        None,
        max_length=512,
        description="record id (default: a path record's resolved path, a URL record's URL; required with vector)",
    )
    vector: Optional[list[float]] = Field(None, description="the record's vector (any length: it is normalised)")
    url: Optional[str] = Field(None, description="http(s) image URL, downloaded with the address guard")
    path: Optional[str] = Field(None, description="server-side image file inside a configured root")
    metadata: Optional[Metadata] = None


class AddRecords(_Body):
    records: list[RecordIn] = Field(description="at most the server's max_batch records")


class Upserted(BaseModel):
    upserted: int
    ids: list[str]


class RecordOut(BaseModel):
    id: str
    metadata: Metadata
    vector: Optional[list[float]] = None


class DeleteRecords(_Body):
    ids: Optional[list[str]] = None
    where: Optional[Filter] = None


class DeletedCount(BaseModel):
    deleted: int


# ------------------------------------------------------------------------------------ search


class SearchBody(_Body):
    text: Optional[str] = Field(None, description="text query (any language the model reads)")
    image_url: Optional[str] = Field(None, description="http(s) URL of a query image")
    id: Optional[str] = Field(None, description="an existing record: more like it (itself excluded)")
    vector: Optional[list[float]] = Field(None, description="a raw query vector of the collection's dimension")
    top: int = Field(10, ge=1, description="number of hits (at most the server's max_top)")
    where: Optional[Filter] = None
    threshold: Optional[float] = Field(None, ge=0, le=1, description="minimum calibrated score (0.5: probably a match)")
    min_cosine: Optional[float] = Field(None, ge=-1, le=1, description="minimum raw cosine")


class HitOut(BaseModel):
    id: str
    score: float = Field(description="calibrated relevance in [0, 1] (raw cosine for vector-only collections)")
    cosine: float
    metadata: Metadata


class Timing(BaseModel):
    encode_ms: float
    search_ms: float


class SearchOut(BaseModel):
    collection: str
    model: str
    query: dict[str, Any]
    where: list[dict[str, Any]]
    threshold: Optional[float] = None
    took_ms: float
    timing: Timing
    hits: list[HitOut]


# ------------------------------------------------------------------------------------ classify


class ClassifyBody(_Body):
    labels: list[str] = Field(min_length=2, description="candidate labels, e.g. ['cat', 'dog', '汽车']")
    id: Optional[str] = Field(None, description="classify a stored record (from its stored vector)")
    image_url: Optional[str] = None
    vector: Optional[list[float]] = None
    top: Optional[int] = Field(None, ge=1, description="labels to return (default: all, most probable first)")
    templates: Optional[list[str]] = Field(None, description="prompt templates with {} for the label")
    lang: Optional[Literal["en", "zh"]] = None


class LabelOut(BaseModel):
    label: str
    probability: float


class ClassifyOut(BaseModel):
    collection: str
    model: str
    query: dict[str, Any]
    labels: list[LabelOut]


# ------------------------------------------------------------------------------------ jobs


class IndexOptions(_Body):
    labels: Optional[list[str]] = Field(None, description="zero-shot labels to store per image (at least two)")
    label_top: int = Field(1, ge=1)
    label_min_prob: float = Field(0.0, ge=0, le=1)
    prune: bool = Field(False, description="delete records of files gone from the folder")
    dedup: Literal["keep", "skip"] = "keep"
    batch_size: Optional[int] = Field(None, ge=1, le=4096)
    workers: Optional[int] = Field(None, ge=1, le=64)


class IndexBody(_Body):
    source: str = Field(description="folder or manifest (.csv .jsonl .parquet .txt ...) inside a configured root")
    model: Optional[str] = Field(None, description="model for the collection when the job creates it")
    options: IndexOptions = Field(default_factory=IndexOptions)


class JobOut(BaseModel):
    id: str
    collection: str
    source: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    done: int = Field(description="items finished (encoded, unchanged or failed)")
    total: Optional[int] = Field(None, description="items to do, when the source can tell cheaply")
    failed: int
    rate: float = Field(description="items per second so far")
    eta_s: Optional[float] = None
    created_at: str
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    error: Optional[str] = None
    report: Optional[dict[str, Any]] = Field(None, description="the ingest report, once finished")


class JobList(BaseModel):
    jobs: list[JobOut]
