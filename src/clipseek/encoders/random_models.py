"""Randomly initialised CLIP-family models of the real architectures, saved as hub-style directories.

Nothing here downloads. These directories are what the tests and the speed benchmark load through
clipseek's own loader (``Registry.make_encoder(str(path))``), exactly as a user's downloaded model:

- ``config.json`` + ``model.safetensors`` from ``save_pretrained`` of a transformers ``CLIPModel``,
  ``ChineseCLIPModel`` or ``SiglipModel`` built from a config;
- a working tokenizer of the real kind: CLIP byte-level BPE built from the OpenAI BPE merges that ship
  inside ``open_clip_torch`` (``bpe_simple_vocab_16e6.txt.gz``; truncated to the first ``n_merges``
  merges for tiny models, the full 49,408-token vocabulary for real sizes), a BERT WordPiece
  ``vocab.txt`` (Chinese characters + a few English words) for Chinese-CLIP, and a SentencePiece model
  trained on the fly for SigLIP;
- ``preprocessor_config.json`` with the same image pipeline as the real checkpoint.

They prove loading, preprocessing, batching, export parity and the pipeline; random weights cannot
prove semantics. Speed does not depend on weight values, so the real-size ones give honest throughput.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from .preprocess import OPENAI_MEAN, OPENAI_STD

# Real sizes (ViT-B image towers; the text towers of the published checkpoints).
REAL_SIZES: dict[str, dict[str, Any]] = {
    "clip-vit-b32": {
        "arch": "clip",
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32),
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                     max_position_embeddings=77),
        "projection_dim": 512,
    },
    "clip-vit-b16": {
        "arch": "clip",
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=16),
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                     max_position_embeddings=77),
        "projection_dim": 512,
    },
}


def _bpe_file() -> Path:
    import importlib.util
    import os

    if os.environ.get("CLIPSEEK_CLIP_BPE"):
        return Path(os.environ["CLIPSEEK_CLIP_BPE"])
    # find the file without importing open_clip (its import needs torchvision)
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "building a CLIP tokenizer offline needs the OpenAI BPE merges: `pip install --no-deps open_clip_torch` "
            "(only its bpe_simple_vocab_16e6.txt.gz is used) or set CLIPSEEK_CLIP_BPE to that file"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table (the byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_clip_tokenizer(out: Path, n_merges: int | None = 2000, max_length: int = 77) -> int:
    """Write vocab.json + merges.txt of the OpenAI CLIP BPE (first ``n_merges`` merges) and return the
    vocabulary size. The vocabulary follows the OpenAI layout: bytes, bytes + ``</w>``, one token per
    merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (so the end token has the highest id)."""
    lines = gzip.open(_bpe_file(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    if n_merges is not None:
        merges = merges[:n_merges]
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(out), model_max_length=max_length)
    tok.save_pretrained(str(out))
    return len(vocab)


_ZH_CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你猫狗车汽红白黑色蓝绿照片张一只辆猫咪小狗卡车行李架顶男女孩子天空海山城市街道花树鸟马飞机船火箭咖啡杯宇航员硬币摄影师摩托"
_EN_WORDS = ["a", "photo", "of", "the", "cat", "dog", "car", "red", "white", "suv", "truck", "picture", "an", "and"]


def write_bert_tokenizer(out: Path, max_length: int = 52) -> int:
    """A small BERT WordPiece vocabulary (Chinese characters are split one per token, as in
    RoBERTa-wwm-ext's tokenizer) and the tokenizer files, via transformers' BertTokenizer."""
    chars = list(dict.fromkeys(_ZH_CHARS))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + _EN_WORDS + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = list(dict.fromkeys(vocab))
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(str(out), model_max_length=max_length)
    tok.save_pretrained(str(out))
    return len(vocab)


def write_siglip_tokenizer(out: Path, vocab_size: int = 300, max_length: int = 64) -> int:
    """Train a tiny SentencePiece unigram model on a few sentences (English + Chinese) and save it as
    the ``spiece.model`` of a SiglipTokenizer."""
    import io

    import sentencepiece as spm

    corpus = [
        "a photo of a cat", "a photo of a dog", "a red car on the street", "a white suv with a roof rack",
        "一张猫的照片。", "一张狗的照片。", "红色的汽车", "白色SUV 车顶行李架", "an astronaut in space",
        "a cup of coffee", "coins on a table", "a horse in a field", "a rocket launch", "a motorcycle",
    ] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
        hard_vocab_limit=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiece.model").write_bytes(model.getvalue())
    from transformers import SiglipTokenizer

    tok = SiglipTokenizer(vocab_file=str(out / "spiece.model"), model_max_length=max_length)
    tok.save_pretrained(str(out))
    return tok.vocab_size


def _preprocessor(out: Path, cfg: dict[str, Any]) -> None:
    (out / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


def make_clip(out: Path, size: str | None = None, seed: int = 0, n_merges: int | None = 2000) -> Path:
    """A CLIP directory: tiny by default, or one of :data:`REAL_SIZES` (``size="clip-vit-b32"``)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    out = Path(out)
    if size is not None:
        n_merges = None
    vocab = write_clip_tokenizer(out, n_merges=n_merges)
    if size is None:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=224, patch_size=32)
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=77)
        proj = 24
    else:
        spec = REAL_SIZES[size]
        vision, text, proj = spec["vision"], spec["text"], spec["projection_dim"]
    cfg = CLIPConfig(
        text_config=dict(text, vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=vision,
        projection_dim=proj,
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(str(out))
    _preprocessor(out, {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": vision["image_size"]},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": vision["image_size"], "width": vision["image_size"]},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(OPENAI_MEAN),
        "image_std": list(OPENAI_STD), "do_convert_rgb": True,
    })
    return out


def make_chinese_clip(out: Path, seed: int = 0) -> Path:
    """A tiny Chinese-CLIP directory (ViT image tower + BERT text tower, squash-resize to 224x224)."""
    import torch
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    out = Path(out)
    vocab = write_bert_tokenizer(out)
    cfg = ChineseCLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=16),
        projection_dim=24,
    )
    torch.manual_seed(seed)
    ChineseCLIPModel(cfg).eval().save_pretrained(str(out))
    _preprocessor(out, {
        "image_processor_type": "ChineseCLIPImageProcessor", "do_resize": True, "size": {"height": 224, "width": 224},
        "resample": 3, "do_center_crop": False, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(OPENAI_MEAN), "image_std": list(OPENAI_STD),
        "do_convert_rgb": True,
    })
    return out


def make_siglip(out: Path, seed: int = 0, image_size: int = 256) -> Path:
    """A tiny SigLIP directory (256x256 squash resize, mean/std 0.5, 64 tokens padded to max_length)."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    out = Path(out)
    vocab = write_siglip_tokenizer(out)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=16),
    )
    torch.manual_seed(seed)
    SiglipModel(cfg).eval().save_pretrained(str(out))
    _preprocessor(out, {
        "image_processor_type": "SiglipImageProcessor", "do_resize": True,
        "size": {"height": image_size, "width": image_size}, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    })
    return out


MAKERS = {"clip": make_clip, "chinese_clip": make_chinese_clip, "siglip": make_siglip}
