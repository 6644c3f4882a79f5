"""Fixtures of the model tests: a tiny model config, a deterministic one-thread setup, and
token streams for the model and trainer tests (a minimal `refinery-tokens-v1` writer, a
learnable pair of streams and a tiny training job over them).

The stream writer is deliberately independent of `tokenizer.token_stream`'s writer (plain
pyarrow, any number of files and record batches), so the reader is checked against the
format document rather than against the code that shares its module.

Imports only torch, numpy and pyarrow (a GPU machine has nothing else).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from model import ModelConfig


def _tiny(**kw) -> ModelConfig:
    """A tiny GQA model config (97-token vocabulary, 2 layers); ``kw`` overrides fields."""
    base = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                max_seq_len=64)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture
def seed_and_one_thread():
    """Deterministic weights; one intra-op thread (tiny ops, shared 2-core CI machine).

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("seed_and_one_thread")``."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny() -> Callable[..., ModelConfig]:
    """``(**fields) ->`` a tiny GQA model config (97-token vocabulary, 2 layers)."""
    return _tiny


def _write_stream(path: Path, docs: list[list[int]], *, eos_id: int = 0,
                  vocab_size: int = 256, dtype: str = "uint16", docs_per_file: int | None = None,
                  rows_per_batch: int | None = None) -> Path:
    """Write ``docs`` (each gets ``eos_id`` appended) as a token stream directory; returns it."""
    path.mkdir(parents=True, exist_ok=True)
    arrow_t = {"uint16": pa.uint16(), "uint32": pa.uint32()}[dtype]
    schema = pa.schema([("tokens", pa.list_(arrow_t))])
    docs_per_file = docs_per_file or max(1, len(docs))
    files, total = [], 0
    for fi, lo in enumerate(range(0, len(docs), docs_per_file)):
        chunk = [list(d) + [eos_id] for d in docs[lo:lo + docs_per_file]]
        name = f"part-{fi:05d}.arrow"
        with pa.OSFile(str(path / name), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
            step = rows_per_batch or max(1, len(chunk))
            for b in range(0, len(chunk), step):
                arr = pa.array(chunk[b:b + step], type=pa.list_(arrow_t))
                w.write_batch(pa.record_batch([arr], schema=schema))
        n = sum(len(d) for d in chunk)
        files.append({"path": name, "num_tokens": n, "num_docs": len(chunk)})
        total += n
    manifest = {"format": "refinery-tokens-v1", "dtype": dtype, "eos_id": eos_id,
                "vocab_size": vocab_size, "tokenizer_hash": "test", "files": files,
                "total_tokens": total, "total_docs": len(docs)}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def _make_streams(root: Path) -> tuple[Path, Path]:
    """A learnable train stream (counting sequences with random strides) and an eval stream."""
    rng = np.random.default_rng(0)

    def docs(n: int) -> list[list[int]]:
        out = []
        for _ in range(n):
            start, stride = int(rng.integers(1, 60)), int(rng.integers(1, 4))
            length = int(rng.integers(8, 60))
            out.append([(start + stride * i) % 63 + 1 for i in range(length)])
        return out

    train = _write_stream(root / "train", docs(400), vocab_size=64, docs_per_file=150,
                         rows_per_batch=64)
    val = _write_stream(root / "val", docs(40), vocab_size=64)
    return train, val


def _tiny_config(root: Path, **train_overrides) -> dict:
    """A tiny CPU training job over streams written under ``root`` (``train`` overrides)."""
    train, val = _make_streams(root)
    return {
        "job": "train",
        "model": {"preset": "tiny", "vocab_size": "auto", "d_model": 32, "n_heads": 4,
                  "n_kv_heads": 2, "d_ff": 64},
        "data": {"train": str(train), "eval": {"val": str(val)}, "seq_len": 32},
        "train": {"out_dir": str(root / "run"), "device": "cpu", "batch_size": 4,
                  "grad_accum": 2, "max_steps": 8, "lr": 3e-3, "warmup_steps": 2,
                  "eval_every": 4, "eval_batches": 2, "log_every": 1, "ckpt_every": 100,
                  "compile": False, **train_overrides},
    }


@pytest.fixture(scope="session")
def write_stream() -> Callable[..., Path]:
    """``(path, docs, *, eos_id=0, vocab_size=256, dtype="uint16", docs_per_file=None,
    rows_per_batch=None) -> path``: see :func:`_write_stream`."""
    return _write_stream


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., dict]:
    """``(root, **train_overrides) ->`` a tiny CPU training job: see :func:`_tiny_config`."""
    return _tiny_config
