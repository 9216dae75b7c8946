"""A real CLIP BPE tokenizer for offline models, built from the vocabulary open_clip ships.

SD v1.5's tokenizer is CLIP's: 49,408 ids, namely the 256 byte symbols, the same 256 with the
end-of-word mark, 48,894 merges in file order, then <|startoftext|> and <|endoftext|>. The
merge list is the first 48,894 merges of open_clip's bpe_simple_vocab_16e6.txt.gz, so writing
vocab.json and merges.txt from it gives a transformers CLIPTokenizer with the same ids.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

VOCAB_SIZE = 49_408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The printable stand-in of every byte, in byte order (GPT-2/CLIP convention)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    stand_in = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in stand_in:
            stand_in[b] = chr(256 + extra)
            extra += 1
    # CLIP orders the base vocabulary printable bytes first, then the remapped ones.
    return [stand_in[b] for b in printable] + [
        stand_in[b] for b in range(256) if b not in printable
    ]


def _open_clip_merges() -> list[tuple[str, str]]:
    source = resources.files("open_clip").joinpath("bpe_simple_vocab_16e6.txt.gz")
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        lines = text.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise RuntimeError("open_clip's BPE file does not have the expected merges")
    return merges  # type: ignore[return-value]


def write_clip_tokenizer(folder: Path, *, model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and the configs a CLIPTokenizer loads from ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    merges = _open_clip_merges()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [START, END]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"built {len(vocab)} tokens, expected {VOCAB_SIZE}")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        "bos_token": START,
        "eos_token": END,
        "unk_token": END,
        "pad_token": END,
        "errors": "replace",
        "add_prefix_space": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": END}, indent=2
        )
    )
    return folder
