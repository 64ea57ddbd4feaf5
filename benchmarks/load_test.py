"""Locust load test of ``clipseek serve``: text search, image search (upload) and vector search.

Run it through ``benchmarks/load_run.py`` (which prepares the data, starts the server and runs each
case bounded in time), or by hand against a server whose data folder has the collections
``photos`` (the offline model) and ``vec`` (vector-only, 512-d)::

    locust -f benchmarks/load_test.py --headless -u 8 -r 8 -t 20s --tags text --host http://127.0.0.1:8000

Each simulated user is a closed loop (no think time): it sends its next request when the previous
one is answered, so N users are N concurrent clients. Pick the kind of query with ``--tags``
(``text``, ``image`` or ``vector``). Env: ``LOAD_VECTOR_DIM`` (512), ``LOAD_TOP`` (10),
``LOAD_API_KEY`` (sent as a Bearer key when set).
"""

from __future__ import annotations

import io
import os
import random

import numpy as np
from locust import HttpUser, constant, tag, task

TEXTS = [
    "a cat", "a tabby cat", "a cup of coffee", "espresso", "a motorcycle", "a rocket launch", "a flower",
    "a Chinese temple", "a page of printed text", "an astronaut", "a horse", "a dog on a beach", "a red car",
    "一只猫", "一杯咖啡", "摩托车", "火箭发射", "花", "中国的寺庙", "一页印刷文字", "宇航员", "一匹马", "海滩上的狗",
    "a man with a camera on a tripod", "a bowl of soup", "a city street at night", "a mountain lake", "a bicycle",
]
DIM = int(os.environ.get("LOAD_VECTOR_DIM", "512"))
TOP = int(os.environ.get("LOAD_TOP", "10"))


def _query_images() -> list[bytes]:
    """The sample photos as JPEG uploads (quality 85, as a camera or a browser sends them)."""
    from PIL import Image

    from clipseek.samples import sample_photos

    out = []
    for _, path, _ in sample_photos():
        buf = io.BytesIO()
        Image.open(path).convert("RGB").save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


_IMAGES: list[bytes] = []
_VECTORS = np.random.default_rng(1).normal(size=(256, DIM)).astype(np.float32)
_VECTORS /= np.linalg.norm(_VECTORS, axis=1, keepdims=True)


class Searcher(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        key = os.environ.get("LOAD_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.rng = random.Random()

    @tag("text")
    @task
    def text(self) -> None:
        self.client.post("/v1/collections/photos/search", json={"text": self.rng.choice(TEXTS), "top": TOP}, name="text")

    @tag("image")
    @task
    def image(self) -> None:
        if not _IMAGES:
            _IMAGES.extend(_query_images())
        data = self.rng.choice(_IMAGES)
        self.client.post(
            "/v1/collections/photos/search/image",
            files={"file": ("query.jpg", data, "image/jpeg")},
            data={"top": str(TOP)},
            name="image",
        )

    @tag("vector")
    @task
    def vector(self) -> None:
        v = _VECTORS[self.rng.randrange(len(_VECTORS))]
        self.client.post("/v1/collections/vec/search", json={"vector": v.tolist(), "top": TOP}, name="vector")
