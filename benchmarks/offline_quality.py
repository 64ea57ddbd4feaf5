"""Quality and speed of the offline model (``clipseek.encoders.offline.OfflineEncoder``).

    python benchmarks/offline_quality.py [--json out.json] [--fmnist N] [--skip-speed]

1. text -> image: 76 queries (38 English, 38 Chinese; two per photo and language, split into half A
   and half B) that each name what is in one of the 19 sample photos of scikit-image and
   scikit-learn (``clipseek.samples``). Reports top-1 accuracy and recall@3 overall, per language and
   per half. The model was tuned on half A only; half B is the check against over-fitting.
2. near-duplicates: two edits of every photo (85% centre crop, and 80% crop off the top-left corner;
   both mirrored, rescaled to 60% and re-encoded as JPEG quality 60) must find their original first
   among the 19 photos.
3. Fashion-MNIST image -> image precision@10 by label, on the first N test images
   (``apt-get install dataset-fashion-mnist``; skipped if missing; ``--fmnist 0`` skips it).
4. calibration evidence: raw cosines of matching / non-matching (query, photo) pairs and of
   (near-duplicate, original) / (photo, other photo) pairs, with a logistic fit of where a pair turns
   from non-match to match.
5. speed: images/s of ``embed_images`` on decoded 512-px photos at batch sizes 8, 16, 32, and the
   latency of one text query.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from clipseek.encoders.offline import OfflineEncoder
from clipseek.images import load_image
from clipseek.samples import sample_photos

# (photo id, [English half A, half B], [Chinese half A, half B])
QUERIES: list[tuple[str, list[str], list[str]]] = [
    ("astronaut", ["an astronaut", "a man in a space suit"], ["宇航员", "穿着宇航服的人"]),
    ("camera", ["a photographer with a camera", "a man with a camera on a tripod"], ["摄影师", "拿着相机的男人"]),
    ("chelsea", ["a cat", "a tabby cat"], ["一只猫", "小猫"]),
    ("coffee", ["a cup of coffee", "espresso"], ["一杯咖啡", "咖啡"]),
    ("coins", ["coins", "old coins"], ["硬币", "古钱币"]),
    ("horse", ["a horse", "silhouette of a horse"], ["一匹马", "马的剪影"]),
    ("hubble_deep_field", ["galaxies in deep space", "stars in the night sky"], ["深空中的星系", "夜空中的星星"]),
    ("ihc", ["cells under a microscope", "stained tissue sample"], ["显微镜下的细胞", "染色的组织切片"]),
    ("moon", ["the surface of the moon", "craters on the moon"], ["月球表面", "月球上的陨石坑"]),
    ("motorcycle", ["a motorcycle", "a motorbike"], ["摩托车", "一辆摩托车"]),
    ("page", ["a page of printed text", "a printed document"], ["一页印刷文字", "文件"]),
    ("retina", ["the retina of an eye", "eye fundus photograph"], ["眼睛的视网膜", "眼底照片"]),
    ("rocket", ["a rocket launch", "a space rocket"], ["火箭发射", "火箭"]),
    ("text", ["handwritten text", "handwriting"], ["手写文字", "手写的字"]),
    ("brick", ["a brick wall", "bricks"], ["砖墙", "砖块"]),
    ("grass", ["grass", "a lawn"], ["草", "草地"]),
    ("gravel", ["gravel", "small stones"], ["碎石", "小石子"]),
    ("china", ["a Chinese temple", "a pagoda"], ["中国的寺庙", "中国古建筑"]),
    ("flower", ["a flower", "a blossom"], ["一朵花", "花"]),
]

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def query_table() -> list[dict]:
    rows = []
    for pid, en, zh in QUERIES:
        for lang, texts in (("en", en), ("zh", zh)):
            for half, text in zip("AB", texts):
                rows.append({"text": text, "target": pid, "lang": lang, "half": half})
    return rows


def near_duplicates(img: Image.Image) -> list[Image.Image]:
    """Two edited copies of ``img``: crop (centre 85% / top-left 80%) + mirror + 60% + JPEG q60."""
    w, h = img.size
    out = []
    for frac, anchor in ((0.85, "centre"), (0.80, "corner")):
        cw, ch = round(w * frac), round(h * frac)
        x0, y0 = ((w - cw) // 2, (h - ch) // 2) if anchor == "centre" else (0, 0)
        e = ImageOps.mirror(img.crop((x0, y0, x0 + cw, y0 + ch)))
        e = e.resize((max(1, round(cw * 0.6)), max(1, round(ch * 0.6))), Image.BICUBIC)
        buf = io.BytesIO()
        e.save(buf, format="JPEG", quality=60)
        out.append(load_image(buf.getvalue(), name="edit"))
    return out


def rank_of(scores: np.ndarray, target: int) -> int:
    return int((scores > scores[target]).sum())


def logistic_center(pos: np.ndarray, neg: np.ndarray) -> float:
    """The cosine where a balanced 1-d logistic fit of match vs non-match crosses 0.5."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # fall back to the midpoint of the medians
        return float((np.median(pos) + np.median(neg)) / 2)
    x = np.concatenate([pos, neg])[:, None]
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    lr = LogisticRegression(class_weight="balanced", C=1e4).fit(x, y)
    return float(-lr.intercept_[0] / lr.coef_[0, 0])


def describe(a: np.ndarray) -> dict:
    return {
        "n": int(len(a)),
        "p10": round(float(np.percentile(a, 10)), 4),
        "median": round(float(np.median(a)), 4),
        "p90": round(float(np.percentile(a, 90)), 4),
    }


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(enc: OfflineEncoder, n: int) -> dict | None:
    img_path, lab_path = FMNIST_DIR / "t10k-images-idx3-ubyte.gz", FMNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    if n <= 0 or not img_path.exists():
        return None
    images, labels = read_idx(img_path)[:n], read_idx(lab_path)[:n]
    t0 = time.perf_counter()
    vecs = enc.embed_images(Image.fromarray(a, "L").convert("RGB") for a in images)
    secs = time.perf_counter() - t0
    hits = []
    for i in range(0, len(vecs), 1000):
        sims = vecs[i : i + 1000] @ vecs.T
        for j in range(sims.shape[0]):
            sims[j, i + j] = -np.inf
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        hits.append((labels[top] == labels[i : i + 1000, None]).mean(axis=1))
    return {
        "n": int(n),
        "precision_at_10": round(float(np.concatenate(hits).mean()), 4),
        "embed_seconds": round(secs, 1),
        "images_per_s": round(n / secs, 1),
    }


def speed(enc: OfflineEncoder, photos: list[Image.Image]) -> dict:
    imgs = [p.resize((512, 512)) for p in photos]
    imgs = (imgs * 4)[:64]
    enc.embed_images(imgs[:8])  # warm up
    out: dict = {"images_per_s": {}}
    saved = enc.batch_size
    try:
        for bs in (8, 16, 32):
            enc.batch_size = bs
            best = math.inf
            for _ in range(2):
                t0 = time.perf_counter()
                enc.embed_images(imgs)
                best = min(best, time.perf_counter() - t0)
            out["images_per_s"][str(bs)] = round(len(imgs) / best, 1)
    finally:
        enc.batch_size = saved
    lat = []
    for i in range(25):
        t0 = time.perf_counter()
        enc.embed_text(f"一只猫 {i}" if i % 2 else f"a cat number {i}")
        lat.append((time.perf_counter() - t0) * 1000)
    out["text_query_ms_median"] = round(statistics.median(lat[5:]), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--fmnist", type=int, default=10000, help="Fashion-MNIST subset size (0 skips)")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)

    enc = OfflineEncoder()
    t0 = time.perf_counter()
    enc.embed_text("warm up")
    load_s = time.perf_counter() - t0
    photos = sample_photos()
    ids = [pid for pid, _, _ in photos]
    images = [load_image(path) for _, path, _ in photos]
    V = enc.embed_images(images)
    report: dict = {"model": enc.info.to_dict(), "load_seconds": round(load_s, 2), "photos": ids}

    # 1. text -> image
    rows = query_table()
    T = enc.embed_texts([r["text"] for r in rows])
    S = T @ V.T
    for r, s in zip(rows, S):
        r["rank"] = rank_of(s, ids.index(r["target"]))
        r["top"] = ids[int(np.argmax(s))]
        r["cosine"] = round(float(s[ids.index(r["target"])]), 4)

    def acc(sel) -> dict:  # type: ignore[no-untyped-def]
        sub = [r for r in rows if sel(r)]
        return {
            "n": len(sub),
            "top1": round(sum(r["rank"] == 0 for r in sub) / len(sub), 3),
            "recall_at_3": round(sum(r["rank"] < 3 for r in sub) / len(sub), 3),
        }

    report["text_to_image"] = {
        "all": acc(lambda r: True),
        "en": acc(lambda r: r["lang"] == "en"),
        "zh": acc(lambda r: r["lang"] == "zh"),
        "half_A (tuning)": acc(lambda r: r["half"] == "A"),
        "half_B (held out)": acc(lambda r: r["half"] == "B"),
        "queries": [{k: r[k] for k in ("text", "target", "rank", "top", "cosine")} for r in rows],
    }

    # 2. near-duplicates
    edits, edit_target = [], []
    for i, img in enumerate(images):
        for e in near_duplicates(img):
            edits.append(e)
            edit_target.append(i)
    E = enc.embed_images(edits)
    ES = E @ V.T
    found = [rank_of(s, t) == 0 for s, t in zip(ES, edit_target)]
    report["near_duplicates"] = {"n": len(found), "found_first": round(sum(found) / len(found), 3)}

    # 4. calibration evidence
    tgt = np.array([ids.index(r["target"]) for r in rows])
    pos_t = S[np.arange(len(rows)), tgt]
    mask = np.ones_like(S, dtype=bool)
    mask[np.arange(len(rows)), tgt] = False
    neg_t = S[mask]
    pos_i = ES[np.arange(len(edits)), edit_target]
    m2 = np.ones_like(ES, dtype=bool)
    m2[np.arange(len(edits)), edit_target] = False
    neg_i = ES[m2]
    VV = V @ V.T
    neg_photo = VV[~np.eye(len(V), dtype=bool)]
    cal = enc.calibration
    report["calibration"] = {
        "text": {
            "match_cosine": describe(pos_t),
            "nonmatch_cosine": describe(neg_t),
            "logistic_center": round(logistic_center(pos_t, neg_t), 4),
            "configured": {"center": cal["text"].center, "scale": cal["text"].scale},
            "median_score_match": round(float(cal["text"].score(np.median(pos_t))), 3),
            "median_score_nonmatch": round(float(cal["text"].score(np.median(neg_t))), 3),
            "match_scored_above_0.5": round(float((cal["text"].score(pos_t) > 0.5).mean()), 3),
            "nonmatch_scored_below_0.5": round(float((cal["text"].score(neg_t) < 0.5).mean()), 3),
        },
        "image": {
            "near_duplicate_cosine": describe(pos_i),
            "different_photo_cosine": describe(np.concatenate([neg_i, neg_photo])),
            "logistic_center": round(logistic_center(pos_i, np.concatenate([neg_i, neg_photo])), 4),
            "configured": {"center": cal["image"].center, "scale": cal["image"].scale},
            "median_score_match": round(float(cal["image"].score(np.median(pos_i))), 3),
            "median_score_nonmatch": round(float(cal["image"].score(np.median(neg_photo))), 3),
        },
    }

    # 3. Fashion-MNIST
    report["fashion_mnist"] = fashion_mnist(enc, args.fmnist)

    # 5. speed
    if not args.skip_speed:
        report["speed"] = speed(enc, images)
        report["speed"]["threads"] = enc.num_threads

    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def print_report(r: dict) -> None:
    p = print
    p(f"model {r['model']['model_id']} v{r['model']['version']} (load {r['load_seconds']} s)")
    t = r["text_to_image"]
    p("text -> image (19 photos):")
    for key in ("all", "en", "zh", "half_A (tuning)", "half_B (held out)"):
        a = t[key]
        p(f"  {key:18s} n={a['n']:3d}  top-1 {a['top1']:.3f}  recall@3 {a['recall_at_3']:.3f}")
    misses = [q for q in t["queries"] if q["rank"] > 0]
    p("  misses: " + "; ".join(f"{q['text']} -> {q['top']} (rank {q['rank'] + 1})" for q in misses))
    nd = r["near_duplicates"]
    p(f"near-duplicates found first: {nd['found_first']:.3f} of {nd['n']}")
    fm = r["fashion_mnist"]
    if fm:
        p(f"Fashion-MNIST P@10 (n={fm['n']}): {fm['precision_at_10']:.4f}  ({fm['images_per_s']} img/s incl. resize)")
    else:
        p("Fashion-MNIST: skipped")
    for kind in ("text", "image"):
        c = r["calibration"][kind]
        p(f"calibration {kind}: " + json.dumps({k: v for k, v in c.items()}, ensure_ascii=False))
    if "speed" in r:
        s = r["speed"]
        p(
            f"speed ({s['threads']} threads): embed_images img/s by batch {s['images_per_s']}; "
            f"one text query {s['text_query_ms_median']} ms (median)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
