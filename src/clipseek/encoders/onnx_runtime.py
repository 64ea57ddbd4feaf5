"""The ONNX Runtime backend of :class:`~clipseek.encoders.hf.HFClipEncoder`: no torch at query time.

Reads what ``clipseek model export`` wrote into ``<model_dir>/onnx/`` (see :mod:`.onnx_export`):
``image.onnx`` / ``text.onnx`` (fp32) or ``image.int8.onnx`` / ``text.int8.onnx`` and
``manifest.json`` (input names, text length and padding, logit scale, preprocessing).

Text is tokenised with the ``tokenizers`` library from ``onnx/tokenizer.json`` when the export wrote
one (it checks the ids equal transformers' tokenizer first), else with the transformers tokenizer class
named in ``tokenizer_config.json`` imported directly (importing the class does not import torch;
``AutoTokenizer`` would).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ModelUnavailable


def session_options(threads: int | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    n = threads or int(os.environ.get("CLIPSEEK_THREADS", "0") or 0)
    if n:
        so.intra_op_num_threads = n
    so.log_severity_level = 3
    return so


def make_tokenizer(path: Path, manifest: dict[str, Any]) -> Callable[[Sequence[str]], dict[str, np.ndarray]]:
    """A function texts -> {input name: int64 array} matching the reference tokenizer's output."""
    t = manifest["text"]
    names = list(t["inputs"])
    max_len = int(t["max_length"])
    pad_max = bool(t["pad_to_max_length"])
    tj = path / "onnx" / "tokenizer.json"
    if tj.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tj))
        tok.enable_truncation(max_length=max_len)
        tok.enable_padding(pad_id=int(t["pad_token_id"]), pad_token=str(t["pad_token"]),
                           length=max_len if pad_max else None)

        def run(texts: Sequence[str]) -> dict[str, np.ndarray]:
            encs = tok.encode_batch(list(texts))
            out = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                   "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                   "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
            return {k: out[k] for k in names}

        return run
    cfg_file = path / "tokenizer_config.json"
    cls_name = json.loads(cfg_file.read_text()).get("tokenizer_class") if cfg_file.is_file() else None
    if not cls_name:
        raise ModelUnavailable(f"{path}: no onnx/tokenizer.json and no tokenizer_class in tokenizer_config.json")
    import transformers

    cls = getattr(transformers, cls_name, None) or getattr(transformers, cls_name.removesuffix("Fast"), None)
    if cls is None:
        raise ModelUnavailable(f"{path}: unknown tokenizer class {cls_name}")
    hf_tok = cls.from_pretrained(str(path))

    def run_hf(texts: Sequence[str]) -> dict[str, np.ndarray]:
        enc = hf_tok(list(texts), padding="max_length" if pad_max else True, truncation=True, max_length=max_len,
                     return_tensors="np")
        return {k: np.asarray(enc[k], dtype=np.int64) for k in names}

    return run_hf


class OnnxBackend:
    """The two exported towers. Each session is created on its first use: a text query never pays for
    the image tower (351 MB for ViT-B/32 fp32, most of a text query's start-up and memory)."""

    kind = "onnx"

    def __init__(self, path: Path, manifest: dict[str, Any], int8: bool = False, threads: int | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401 - fail here, with the install hint, rather than on the first query
        except ImportError:
            raise ModelUnavailable("the ONNX runtime needs onnxruntime: pip install 'clipseek[onnx]'") from None
        self.path = path
        self.manifest = manifest
        self.files = manifest["int8"] if int8 else {"image": manifest["image"]["file"], "text": manifest["text"]["file"]}
        self.threads = threads
        self.image_input = manifest["image"]["input"]
        self._sessions: dict[str, Any] = {}
        self._tokenize: Callable[[Sequence[str]], dict[str, np.ndarray]] | None = None
        self._lock = threading.Lock()

    def session(self, tower: str) -> Any:
        """The InferenceSession of ``tower`` ("image" or "text"), created on first use."""
        sess = self._sessions.get(tower)
        if sess is None:
            with self._lock:
                sess = self._sessions.get(tower)
                if sess is None:
                    import onnxruntime as ort

                    sess = ort.InferenceSession(str(self.path / "onnx" / self.files[tower]), session_options(self.threads),
                                                providers=["CPUExecutionProvider"])
                    self._sessions[tower] = sess
        return sess

    def images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.session("image").run(None, {self.image_input: np.ascontiguousarray(pixel_values, dtype=np.float32)})[0]

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenize is None:
            self._tokenize = make_tokenizer(self.path, self.manifest)
        return self.session("text").run(None, self._tokenize(texts))[0]

    def logit_params(self) -> tuple[float, float | None]:
        return float(self.manifest.get("logit_scale") or 100.0), self.manifest.get("logit_bias")


__all__ = ["OnnxBackend", "make_tokenizer", "session_options"]
