"""Small but real models to serve from the local Hub: safetensors weights, a tokenizer, configs.

Written by hand in the published formats, so tests can load them with the safetensors and tokenizers
libraries offline, from the cache, the way an engine would.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

VOCAB = ["[UNK]", "[PAD]", "hello", "world", "model", "cache", "fetch", "pod", "kubernetes", "shared"]


def safetensors_bytes(tensors: dict[str, tuple[list[int], bytes]]) -> bytes:
    """The safetensors format: u64 header length, a JSON header, then the raw little-endian data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, data) in tensors.items():
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(data for _, data in tensors.values())


def float_tensor(shape: list[int], rng: random.Random) -> tuple[list[int], bytes]:
    count = 1
    for dim in shape:
        count *= dim
    return shape, struct.pack(f"<{count}f", *(rng.uniform(-1, 1) for _ in range(count)))


def tokenizer_json() -> bytes:
    tokenizer: dict[str, object] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(VOCAB)}, "unk_token": "[UNK]"},
    }
    return json.dumps(tokenizer, indent=1).encode()


def tiny_model_files(*, seed: int = 0, hidden: int = 64, layers: int = 2) -> dict[str, bytes]:
    """A tiny model repository: weights (~100 KB, an LFS file), tokenizer and small config files."""
    rng = random.Random(seed)
    tensors = {"embed.weight": float_tensor([len(VOCAB), hidden], rng)}
    for layer in range(layers):
        tensors[f"layers.{layer}.weight"] = float_tensor([hidden, hidden], rng)
    config = {"model_type": "tiny", "hidden_size": hidden, "num_layers": layers, "vocab_size": len(VOCAB)}
    return {
        "config.json": json.dumps(config, indent=1).encode(),
        "generation_config.json": b'{"max_new_tokens": 16}',
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": b'{"model_max_length": 128}',
        "model.safetensors": safetensors_bytes(tensors),
        "README.md": b"# tiny\nA tiny model made by modelcache's tests.\n",
    }


def write_sharded_model(directory: Path, *, total_bytes: int, shards: int, seed: int = 0) -> dict[str, Path]:
    """A model of about total_bytes in several safetensors shards on disk (for benchmarks)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files: dict[str, Path] = {}
    per_shard = total_bytes // shards
    weight_map = {}
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        floats = per_shard // 4
        block = rng.randbytes(1 << 20)
        path = directory / name
        header = json.dumps({"w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, floats * 4]}}).encode()
        header += b" " * (-len(header) % 8)
        with path.open("wb") as out:
            out.write(struct.pack("<Q", len(header)) + header)
            remaining = floats * 4
            while remaining:
                piece = block[: min(len(block), remaining)]
                out.write(piece)
                remaining -= len(piece)
                block = block[1:] + block[:1]  # vary content so blocks are not identical
        files[name] = path
        weight_map[f"shard{index}.w"] = name
    extra = {
        "model.safetensors.index.json": json.dumps({"metadata": {}, "weight_map": weight_map}).encode(),
        "config.json": b'{"model_type": "bench"}',
        "tokenizer.json": tokenizer_json(),
    }
    for name, data in extra.items():
        (directory / name).write_bytes(data)
        files[name] = directory / name
    return files
