"""Where model weights come from, and how they move to an air-gapped machine.

- :func:`resolve_default_model` picks the model of a new collection (issue 3's order).
- :func:`find_local` / :func:`locate` turn a preset name or hub id into a local directory: clipseek's
  model directory (``$CLIPSEEK_HOME/models/<name>``) first, then the Hugging Face cache, then (when
  allowed) a download from the hub with a progress bar.
- :func:`pull` downloads a preset or hub id into a plain directory; :func:`pack` turns a model directory
  into one ``.tar`` (or ``.tar.gz``) plus a ``<archive>.sha256`` file; :func:`unpack` verifies the
  checksum before writing anything, then extracts into ``$CLIPSEEK_HOME/models`` (or ``dest``).
- :func:`check_model_dir` says clearly what a directory lacks (``ModelUnavailable`` naming the file).
- Every download (``pull``, a preset located on first use, a new collection's default model) is bounded
  (:class:`DownloadBounds`: 60 s without receiving anything, 2 h in all), and a hub that cannot be
  reached is reported as what it is: a failed DNS lookup, a refused connection, or no answer in time.

Nothing here imports torch or transformers. ``huggingface_hub`` is imported only to download or to look
into its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from zlib import error as zlib_error

from .encoders.presets import DEFAULT_ORDER, DEFAULT_PRESET, PRESETS, Preset, get_preset, preset_for_hub_id
from .errors import ClipseekError, ModelUnavailable, UnknownPlugin
from .paths import models_dir

OFFLINE_MODEL = "offline"
HUB_TIMEOUT = 3.0
SUPPORTED_ARCHS = ("clip", "chinese_clip", "siglip")
MARKER = "clipseek-model.json"  # written by pull/unpack: where a directory came from
ONNX_MANIFEST = Path("onnx") / "manifest.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What to fetch of a model repository: configs, tokenizer, one weights format; never TF/Flax/ONNX copies.
DOWNLOAD_PATTERNS = ["config.json", "processor_config.json", "preprocessor_config.json", "tokenizer*", "special_tokens_map.json",
                     "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                     "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                     "pytorch_model-*.bin"]


# ------------------------------------------------------------------------------------------ places


def hub_cache_dir() -> Path:
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    base = Path(home).expanduser() if home else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return base / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def looks_like_hub_id(spec: str) -> bool:
    return bool(HUB_ID_RE.match(spec)) and not spec.startswith((".", "~"))


def looks_like_path(spec: str) -> bool:
    if spec.startswith(("/", "./", "../", "~")) or Path(spec).expanduser().exists():
        return True
    return os.sep in spec and not looks_like_hub_id(spec)


# ------------------------------------------------------------------------------------------ directories


@dataclass
class ModelDir:
    """What a checked model directory holds."""

    path: Path
    arch: str | None
    torch_weights: bool
    onnx: dict[str, Any] | None  # the export manifest, when ``onnx/manifest.json`` exists
    marker: dict[str, Any]

    @property
    def hub_id(self) -> str | None:
        return self.marker.get("hub_id") or (self.onnx or {}).get("hub_id")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"cannot read {path}: {e}") from None


def check_model_dir(path: str | Path, need: str = "any") -> ModelDir:
    """Check that ``path`` is a usable model directory, or raise ModelUnavailable naming what is missing.

    ``need``: ``"torch"`` (config + weights + tokenizer), ``"onnx"`` (an export manifest and its files +
    tokenizer) or ``"any"`` (either).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelUnavailable(f"model directory {p} does not exist")
    if not p.is_dir():
        raise ModelUnavailable(f"{p} is not a directory (a model is a directory with config.json and weights)")
    marker = read_json(p / MARKER) if (p / MARKER).is_file() else {}
    onnx = read_json(p / ONNX_MANIFEST) if (p / ONNX_MANIFEST).is_file() else None
    arch = None
    problems: list[str] = []
    torch_ok = False
    if (p / "config.json").is_file():
        cfg = read_json(p / "config.json")
        arch = cfg.get("model_type")
        if arch not in SUPPORTED_ARCHS:
            raise ModelUnavailable(
                f"{p}: model type {arch!r} is not supported; clipseek runs {', '.join(SUPPORTED_ARCHS)} models"
            )
        weights = [w for w in WEIGHT_FILES if (p / w).is_file()]
        for idx in SHARD_INDEXES:
            if (p / idx).is_file():
                shards = sorted(set(read_json(p / idx).get("weight_map", {}).values()))
                missing = [s for s in shards if not (p / s).is_file()]
                if missing:
                    problems.append(f"weights shard {missing[0]} is missing (listed in {idx})")
                else:
                    weights.append(idx)
        if weights:
            torch_ok = True
        elif not problems:
            problems.append("the weights file is missing (model.safetensors or pytorch_model.bin)")
    else:
        problems.append("config.json is missing")
    if onnx is not None:
        arch = arch or onnx.get("arch")
        for key in ("image", "text"):
            f = onnx.get(key, {}).get("file")
            if f and not (p / "onnx" / f).is_file():
                raise ModelUnavailable(f"{p}: onnx/{f} is missing (listed in onnx/manifest.json); re-run `clipseek model export`")
    tok = [f for f in ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model") if (p / f).is_file()]
    if (p / "vocab.json").is_file() and not (p / "merges.txt").is_file() and not (p / "tokenizer.json").is_file():
        raise ModelUnavailable(f"{p}: merges.txt is missing (the CLIP tokenizer needs vocab.json and merges.txt)")
    if not tok:
        raise ModelUnavailable(
            f"{p}: the tokenizer files are missing (tokenizer.json, vocab.json + merges.txt, vocab.txt or spiece.model)"
        )
    if need == "torch" or (need == "any" and onnx is None):
        if problems:
            raise ModelUnavailable(f"{p} is not a complete model directory: {problems[0]}")
    if need == "onnx" and onnx is None:
        raise ModelUnavailable(f"{p} has no ONNX export (onnx/manifest.json); run `clipseek model export {p}`")
    return ModelDir(path=p.resolve(), arch=arch, torch_weights=torch_ok, onnx=onnx, marker=marker)


def fingerprint(path: str | Path) -> str:
    """A stable identity of the weights in a directory: a hash of the small files (configs, tokenizer)
    and, for each weights file, its name, size and first and last MiB. Same files -> same value in
    every process and after copying; different weights -> different value. An ONNX-only directory
    carries the fingerprint of the weights it was exported from."""
    p = Path(path)
    weights = [w for w in (*WEIGHT_FILES, *SHARD_INDEXES) if (p / w).is_file()]
    for idx in SHARD_INDEXES:
        if (p / idx).is_file():
            weights += sorted(set(read_json(p / idx).get("weight_map", {}).values()))
    if not weights and (p / ONNX_MANIFEST).is_file():
        fp = read_json(p / ONNX_MANIFEST).get("source_fingerprint")
        if fp:
            return str(fp)
    h = hashlib.sha256()
    # files absent from a directory add nothing, so adding a name here keeps older directories' values
    for name in ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json", "vocab.json",
                 "merges.txt", "vocab.txt", "spiece.model"):
        f = p / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    for name in weights:
        f = p / name
        size = f.stat().st_size
        h.update(f"{name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ finding


def _local_candidates(name: str) -> list[Path]:
    out = [models_dir() / name]
    preset = get_preset(name)
    hub_id = preset.hub_id if preset else name
    if "/" in hub_id:
        out.append(models_dir() / hub_id.replace("/", "--"))
    return out


def _patterns_for(preset: Preset | None) -> list[str]:
    if preset is None:
        return DOWNLOAD_PATTERNS
    weights = list(preset.weights)
    return [p for p in DOWNLOAD_PATTERNS if p not in ("*.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                                      "pytorch_model.bin.index.json", "pytorch_model-*.bin")] + weights


def find_in_hub_cache(hub_id: str) -> Path | None:
    """The cached snapshot of ``hub_id`` (its ``main`` ref) when it is complete, else None."""
    base = hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
    ref = base / "refs" / "main"
    snaps = base / "snapshots"
    cands = []
    if ref.is_file():
        cands.append(snaps / ref.read_text().strip())
    if snaps.is_dir():
        cands += sorted((d for d in snaps.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for d in cands:
        try:
            check_model_dir(d)
            return d
        except ModelUnavailable:
            continue
    return None


def find_local(name: str) -> Path | None:
    """A complete local directory for a preset name or hub id: clipseek's model directory first, then the
    Hugging Face cache. None when neither has it."""
    for d in _local_candidates(name):
        if d.is_dir():
            try:
                check_model_dir(d)
                return d
            except ModelUnavailable:
                continue
    preset = get_preset(name)
    hub_id = preset.hub_id if preset else name
    if looks_like_hub_id(hub_id):
        return find_in_hub_cache(hub_id)
    return None


def hub_answers(timeout: float = HUB_TIMEOUT) -> tuple[bool, str]:
    """(answered, reason). Any HTTP answer counts (even 401/404): the server is there. The reason says
    what failed: the host name did not resolve, the connection was refused, or no answer came in time."""
    if hub_offline():
        return False, "HF_HUB_OFFLINE is set"
    url = hub_endpoint() + "/api/models?limit=1"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "clipseek"}), timeout=timeout):  # noqa: S310
            return True, ""
    except urllib.error.HTTPError:
        return True, ""
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        return False, _unreachable(e, timeout)


def _unreachable(e: BaseException, timeout: float) -> str:
    reason = getattr(e, "reason", e)
    where = f"the hub at {hub_endpoint()}"
    host = urllib.parse.urlsplit(hub_endpoint()).hostname or hub_endpoint()
    if isinstance(reason, socket.gaierror):
        return f"{where} cannot be reached: DNS lookup of {host} failed ({reason})"
    if isinstance(reason, ConnectionRefusedError):
        return f"{where} refused the connection"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"{where} did not answer within {timeout:g} s"
    return f"{where} cannot be reached ({reason})"


@dataclass(frozen=True)
class DownloadBounds:
    """How long a download may take: ``stall_s`` without receiving anything (a hub that answered and then
    went quiet), and ``deadline_s`` in all."""

    stall_s: float = 60.0
    deadline_s: float = 2 * 3600.0


class _Watch:
    """Activity of one download, fed by the progress bars huggingface_hub updates as bytes arrive."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.given_up = False

    def tqdm_class(self) -> type:
        from huggingface_hub import constants
        from huggingface_hub.utils import tqdm as hf_tqdm

        # huggingface_hub reports HTTP progress once per read chunk (10 MiB): on a slow link that is minutes
        # between reports. 1 MiB chunks keep the stall watchdog meaningful down to ~20 KB/s.
        constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, 1 << 20)

        watch = self

        class Watched(hf_tqdm):  # type: ignore[misc, valid-type]
            def update(self, n: float | None = 1) -> bool | None:
                if watch.given_up:  # stop writing files for a download we already reported as failed
                    raise ModelUnavailable("download abandoned")
                watch.last = time.monotonic()
                return super().update(n)  # type: ignore[no-any-return]

        return Watched


def _bounded(fetch: Callable[[type], Path], what: str, bounds: DownloadBounds) -> Path:
    """Run ``fetch(tqdm_class)`` in a worker thread; raise ModelUnavailable when nothing arrives for
    ``bounds.stall_s`` or the whole takes longer than ``bounds.deadline_s``. A thread blocked in a read
    cannot be stopped: it is a daemon, and it stops at its next progress update (or huggingface_hub's own
    read timeout) without writing more."""
    watch = _Watch()
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["path"] = fetch(watch.tqdm_class())
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            out["error"] = e

    worker = threading.Thread(target=work, name="clipseek-download", daemon=True)
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        now = time.monotonic()
        if worker.is_alive() and now - watch.last > bounds.stall_s:
            watch.given_up = True
            raise ModelUnavailable(f"cannot download {what}: the hub at {hub_endpoint()} stalled (nothing received for "
                                   f"{bounds.stall_s:g} s)")
        if worker.is_alive() and now - start > bounds.deadline_s:
            watch.given_up = True
            raise ModelUnavailable(f"cannot download {what}: not finished within the {bounds.deadline_s:g} s deadline")
    if "error" in out:
        raise out["error"]
    return Path(out["path"])


def download(name: str, dest: Path | None = None, *, progress: bool = True, timeout: float = HUB_TIMEOUT,
             bounds: DownloadBounds = DownloadBounds(), probe: bool = True) -> Path:
    """Download a preset or hub id (into ``dest``, else into the Hugging Face cache); return the directory.

    Raises ModelUnavailable when the hub does not answer within ``timeout`` (``probe=False``: the caller
    has just asked), HF_HUB_OFFLINE is set, the download stalls or passes its deadline (``bounds``), or
    it fails.
    """
    preset = get_preset(name)
    hub_id = preset.hub_id if preset else name
    if preset is None and not looks_like_hub_id(hub_id):
        raise unknown_model(name)
    ok, why = hub_answers(timeout) if probe else (True, "")
    if not ok:
        raise ModelUnavailable(f"cannot download {hub_id}: {why}. {how_to_get(name)}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelUnavailable("downloading models needs huggingface_hub: pip install 'clipseek[clip]'") from None
    if not progress:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        # the endpoint that answered the probe, also when huggingface_hub was imported with another one
        kwargs: dict[str, Any] = {"allow_patterns": _patterns_for(preset), "endpoint": hub_endpoint()}
        if dest is not None:
            kwargs["local_dir"] = str(dest)
        else:
            kwargs["cache_dir"] = str(hub_cache_dir())
        path = _bounded(lambda bar: Path(snapshot_download(hub_id, tqdm_class=bar, **kwargs)), hub_id, bounds)
    except ClipseekError:
        raise
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: all become one clear message
        raise ModelUnavailable(f"cannot download {hub_id}: {type(e).__name__}: {e}") from None
    if preset is None and any(path.glob("*.safetensors")):
        for extra in path.glob("pytorch_model*.bin"):  # we asked for both formats; keep one
            extra.unlink()
    check_model_dir(path, need="torch")
    return path


def how_to_get(name: str = DEFAULT_PRESET) -> str:
    return (f"To get it: run `clipseek model pull {name}` on a networked machine, then "
            f"`clipseek model pack` / `clipseek model unpack` to carry it here")


def unknown_model(name: str) -> UnknownPlugin:
    import difflib

    close = difflib.get_close_matches(name, list(PRESETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownPlugin(
        f"unknown model preset {name!r}{hint}; presets: {', '.join(PRESETS)}; or give a hub id (org/name) or a model directory"
    )


def locate(name: str, *, allow_download: bool = True, progress: bool = True) -> Path:
    """A local directory for a preset name or hub id, downloading it when needed and allowed."""
    d = find_local(name)
    if d is not None:
        return d
    if not allow_download:
        raise ModelUnavailable(f"model {name} is not available locally. {how_to_get(name)}")
    return download(name, progress=progress)


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def resolve_default_model(
    configured: str | None,
    *,
    notify: Callable[[str], None] = _stderr,
    timeout: float = HUB_TIMEOUT,
    bounds: DownloadBounds = DownloadBounds(),
    download_fn: Callable[[str], Path] | None = None,
) -> str:
    """The model spec for a new collection, in this order:

    1. the model the user configured (``--model``, config file, env), returned unchanged;
    2. a default preset already on this machine (``$CLIPSEEK_HOME/models`` or the Hugging Face cache),
       trying :data:`DEFAULT_ORDER`;
    3. the default preset downloaded (progress bar) when ``HF_HUB_OFFLINE`` is not set and the hub answers
       within ``timeout`` seconds (the download bounded by ``bounds``);
    4. otherwise ``"offline"`` (the model that needs no download), with one line saying so and how to get
       the better one.
    """
    if configured:
        return configured
    for name in DEFAULT_ORDER:
        if find_local(name) is not None:
            return name
    ok, why = hub_answers(timeout)
    if ok:
        try:
            (download_fn or (lambda n: download(n, timeout=timeout, bounds=bounds, probe=False)))(DEFAULT_PRESET)
            return DEFAULT_PRESET
        except ClipseekError as e:
            why = str(e).split(". To get it")[0]
    notify(f"clipseek: using the offline model ({why}; no CLIP model found locally). {how_to_get(DEFAULT_PRESET)}.")
    return OFFLINE_MODEL


# ------------------------------------------------------------------------------------------ moving


def pull(name: str, dest: str | Path | None = None, *, progress: bool = True,
         bounds: DownloadBounds = DownloadBounds()) -> Path:
    """Download a preset or hub id into a plain directory (default ``$CLIPSEEK_HOME/models/<name>``),
    bounded by ``bounds``; a failed pull removes the directory when it created it."""
    preset = get_preset(name)
    if preset is None and not looks_like_hub_id(name):
        raise unknown_model(name)
    hub_id = preset.hub_id if preset else name
    target = Path(dest).expanduser() if dest else models_dir() / (preset.name if preset else hub_id.replace("/", "--"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = not target.exists()
    try:
        path = download(name, dest=target, progress=progress, bounds=bounds)
    except BaseException:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        raise
    shutil.rmtree(path / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping
    (path / MARKER).write_text(json.dumps({"hub_id": hub_id, "preset": preset.name if preset else None,
                                           "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack(model_dir: str | Path, archive: str | Path) -> tuple[Path, str]:
    """Write ``model_dir`` as one tar archive (gzip when the name ends in .gz/.tgz) and a
    ``<archive>.sha256`` file in ``sha256sum`` format. Returns (archive path, hex digest)."""
    md = check_model_dir(model_dir)
    out = Path(archive).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    tmp = out.with_name(out.name + ".part")
    top = md.path.name
    with tarfile.open(tmp, mode) as tar:
        for f in sorted(md.path.rglob("*")):
            rel = f.relative_to(md.path)
            if rel.parts[0].startswith(".") or not (f.is_file() or f.is_dir()):  # .cache, export leftovers
                continue
            tar.add(f.resolve() if f.is_symlink() else f, arcname=str(Path(top) / rel), recursive=False)
    digest = sha256_file(tmp)
    os.replace(tmp, out)
    Path(str(out) + ".sha256").write_text(f"{digest}  {out.name}\n")
    return out, digest


def _checksum_of(archive: Path) -> str:
    f = Path(str(archive) + ".sha256")
    if not f.is_file():
        raise ModelUnavailable(f"no checksum file {f.name} next to {archive.name}; it is written by `clipseek model pack` "
                               "(use --no-verify to skip the check)")
    text = f.read_text().strip().split()
    if not text or not re.fullmatch(r"[0-9a-fA-F]{64}", text[0]):
        raise ModelUnavailable(f"{f} is not a sha256 checksum file")
    return text[0].lower()


@dataclass(frozen=True)
class UnpackLimits:
    """What :func:`unpack` accepts before writing anything; ``None`` turns a limit off.

    ``max_ratio`` bounds the unpacked size of a compressed archive as a multiple of the archive's own size:
    model weights barely compress (about 1.1x), so a much larger ratio is a compression bomb, not a model.
    """

    max_bytes: int | None = 64 << 30
    max_members: int | None = 10_000
    max_ratio: float | None = 50.0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _archive_stem(arc: Path) -> str:
    name = arc.name
    for ext in (".tar.gz", ".tgz", ".tar", ".gz"):
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def _plan_members(arc: Path, tar: tarfile.TarFile, limits: UnpackLimits) -> tuple[list[tarfile.TarInfo], str | None, int]:
    """The members to extract, the model directory's name in the archive (None when the archive holds
    the directory's contents, as ``tar cf a.tar -C dir .`` makes it) and the bytes they unpack to.
    Raises ModelUnavailable for an unsafe, malformed or over-limit archive; reads but writes nothing."""
    members: list[tarfile.TarInfo] = []
    names: dict[str, tarfile.TarInfo] = {}
    total = 0
    for m in tar:  # lazily, so a huge member list is refused without being held in memory
        if limits.max_members is not None and len(members) >= limits.max_members:
            raise ModelUnavailable(f"{arc.name} has more than {limits.max_members} members (--max-members); "
                                   "nothing was written")
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()) or m.issparse():
            raise ModelUnavailable(f"{arc.name}: unsafe or unsupported member {m.name!r}; nothing was written")
        norm = "/".join(p for p in parts if p != ".")
        if not norm:  # the archive's own root ("./")
            continue
        prior = names.get(norm)
        if prior is not None and prior.isdir() != m.isdir():
            raise ModelUnavailable(f"{arc.name}: {norm!r} is both a file and a directory in the archive; nothing was written")
        names[norm] = m
        members.append(m)
        total += m.size
    for norm, m in names.items():
        segs = norm.split("/")
        for i in range(1, len(segs)):
            above = "/".join(segs[:i])
            if above in names and not names[above].isdir():
                raise ModelUnavailable(f"{arc.name}: member {m.name!r} is inside {above!r}, which is a file in the "
                                       "same archive; nothing was written")
    if not members:
        raise ModelUnavailable(f"{arc.name} is empty; nothing was written")
    if limits.max_bytes is not None and total > limits.max_bytes:
        raise ModelUnavailable(f"{arc.name} would unpack to {_mib(total)}, more than the limit of {_mib(limits.max_bytes)} "
                               "(--max-size); nothing was written")
    packed = max(arc.stat().st_size, 1)
    if limits.max_ratio and total > packed * limits.max_ratio:
        raise ModelUnavailable(f"{arc.name} would unpack to {_mib(total)}, {total // packed}x its compressed size "
                               f"(limit {limits.max_ratio:g}x): model weights barely compress, so this looks like a "
                               "compression bomb. If you trust it, raise --max-ratio; nothing was written")
    tops = {n.split("/")[0] for n in names}
    if len(tops) == 1:
        top = tops.pop()
        if names.get(top) is None or names[top].isdir():
            return members, top, total
    return members, None, total


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def unpack(archive: str | Path, dest: str | Path | None = None, *, verify: bool = True, overwrite: bool = False,
           limits: UnpackLimits = UnpackLimits()) -> Path:
    """Verify and extract a packed model into ``dest`` (default ``$CLIPSEEK_HOME/models``); return the
    model directory. The archive holds one model directory, or a directory's contents (then the model is
    named after the archive). A wrong checksum, an unsafe or malformed member, an archive over ``limits``
    or an incomplete model is a ModelUnavailable, and leaves nothing behind."""
    arc = Path(archive).expanduser()
    if not arc.is_file():
        raise ModelUnavailable(f"archive {arc} does not exist")
    if verify:
        want = _checksum_of(arc)
        got = sha256_file(arc)
        if got != want:
            raise ModelUnavailable(f"checksum mismatch for {arc.name}: expected {want}, got {got}; the archive is "
                                   "damaged or not the one packed. Nothing was written")
    root = Path(dest).expanduser() if dest else models_dir()
    try:
        tar = tarfile.open(arc, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise ModelUnavailable(f"{arc.name} is not a readable tar archive ({e})") from None
    with tar:
        try:
            members, top, total = _plan_members(arc, tar, limits)
        except (tarfile.TarError, EOFError, zlib_error) as e:
            raise ModelUnavailable(f"{arc.name} is damaged ({e}); nothing was written") from None
        name = top or _archive_stem(arc)
        final = root / name
        if final.exists() and not overwrite:
            raise ModelUnavailable(f"{final} already exists; remove it or unpack elsewhere (--dir)")
        created = _first_missing(root)  # removed again when the unpack fails
        have = shutil.disk_usage(created.parent if created else root).free
        if total > have:
            raise ModelUnavailable(f"{arc.name} unpacks to {_mib(total)} but only {_mib(have)} is free under {root}; "
                                   "nothing was written")
        root.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as tmpd:
                into = Path(tmpd) if top else Path(tmpd) / name
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                try:
                    tar.extractall(into, members=members, **kw)  # noqa: S202 - members checked above
                except (tarfile.TarError, EOFError, zlib_error, OSError) as e:
                    raise ModelUnavailable(f"cannot unpack {arc.name}: {e}; nothing was written") from None
                try:
                    check_model_dir(Path(tmpd) / name)
                except ModelUnavailable as e:  # name the archive's directory, not the temporary one
                    why = str(e).replace(str(Path(tmpd) / name), name)
                    raise ModelUnavailable(f"{arc.name} does not hold a usable model: {why}; nothing was written") from None
                if final.exists():
                    shutil.rmtree(final)
                os.replace(Path(tmpd) / name, final)
        except BaseException:
            if created:
                shutil.rmtree(created, ignore_errors=True)
            raise
    marker = final / MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"hub_id": None, "unpacked_from": arc.name}, indent=2))
    return final


def list_local() -> list[dict[str, Any]]:
    """Models found in ``$CLIPSEEK_HOME/models`` and, for presets, the Hugging Face cache."""
    out = []
    seen = set()
    root = models_dir()
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            try:
                md = check_model_dir(d)
                status = "ok" + (" +onnx" if md.onnx else "")
            except ModelUnavailable as e:
                md, status = None, f"incomplete: {e}"
            out.append({"name": d.name, "path": str(d), "status": status,
                        "hub_id": md.hub_id if md else None, "arch": md.arch if md else None})
            seen.add(str(d.resolve()))
    for p in PRESETS.values():
        c = find_in_hub_cache(p.hub_id)
        if c is not None and str(c.resolve()) not in seen:
            out.append({"name": p.name, "path": str(c), "status": "ok (hub cache)", "hub_id": p.hub_id, "arch": p.arch})
    return out


__all__ = [
    "DownloadBounds", "ModelDir", "OFFLINE_MODEL", "check_model_dir", "download", "find_in_hub_cache", "find_local", "fingerprint",
    "hub_answers", "list_local", "locate", "models_dir", "pack", "preset_for_hub_id", "pull", "resolve_default_model",
    "unpack", "UnpackLimits",
]
