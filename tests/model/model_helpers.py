"""Helpers shared by the model tests: a tiny config and a deterministic one-thread setup."""

from __future__ import annotations

import pytest
import torch

from model import ModelConfig


def tiny(**kw) -> ModelConfig:
    """A tiny GQA model config (97-token vocabulary, 2 layers); ``kw`` overrides fields."""
    base = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                max_seq_len=64)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(autouse=True)
def seed_and_one_thread():
    """Deterministic weights; one intra-op thread (tiny ops, shared 2-core CI machine)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
