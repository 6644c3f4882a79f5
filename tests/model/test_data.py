"""Tests for the token-stream reader (tokenizer/token_stream.py), the training windows
(model/data.py) and the config loader (model/config.py).

The streams are written by the `write_stream` fixture (tests/model/conftest.py), a minimal
writer independent of the one in tokenizer/token_stream.py; one test checks the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.config import ConfigError, load_config_file, loads_yaml, merge_overrides
from model.data import (
    EpochSampler,
    WindowSampler,
    eval_plan,
    eval_subset,
    eval_windows,
    make_sampler,
)
from tokenizer.token_stream import TokenStream, write_manifest, write_token_stream


def _docs(rng: np.random.Generator, n: int, vocab: int = 200) -> list[list[int]]:
    return [rng.integers(1, vocab, size=int(rng.integers(1, 40))).tolist() for _ in range(n)]


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_stream_reads_packed_tokens_and_boundaries_across_files(tmp_path, dtype,
                                                                write_stream: Callable):
    rng = np.random.default_rng(0)
    docs = _docs(rng, 23) + [[]]  # an empty document is just its EOS
    s = TokenStream(write_stream(tmp_path / "s", docs, dtype=dtype, docs_per_file=7,
                                 rows_per_batch=3, vocab_size=70000 if dtype == "uint32" else 256))
    flat = np.concatenate([np.array(d + [0], dtype=np.int64) for d in docs])
    assert s.num_tokens == len(flat) and s.num_docs == len(docs)
    np.testing.assert_array_equal(s.read(0, len(flat)), flat)
    # Windows that straddle record batches and files.
    for start in [0, 5, 37, 100, len(flat) - 17]:
        np.testing.assert_array_equal(s.read(start, 17), flat[start:start + 17])
    starts = np.cumsum([0] + [len(d) + 1 for d in docs])[:-1]
    np.testing.assert_array_equal(s.doc_starts, starts)
    # doc_ids: number of document starts passed, relative to the window's first document.
    pos = np.arange(30, 90)
    expect = np.searchsorted(starts, pos, side="right")
    np.testing.assert_array_equal(s.doc_ids(30, 60), expect - expect[0])
    with pytest.raises(IndexError):
        s.read(len(flat) - 3, 4)


def test_stream_is_memory_mapped_not_copied(tmp_path, write_stream: Callable):
    s = TokenStream(write_stream(tmp_path / "s", [[1, 2, 3]] * 50))
    seg = s._segments[0]
    assert not seg.flags.owndata  # a view into the mapped Arrow buffer


def test_stream_rejects_bad_manifest(tmp_path, write_stream: Callable):
    p = write_stream(tmp_path / "s", [[1, 2]])
    m = json.loads((p / "manifest.json").read_text())
    m["files"][0]["num_tokens"] = 99
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="99"):
        TokenStream(p)
    m["format"] = "other"
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format"):
        TokenStream(p)


def test_sampler_windows_are_shifted_deterministic_and_resumable(tmp_path, write_stream: Callable):
    rng = np.random.default_rng(1)
    s = TokenStream(write_stream(tmp_path / "s", _docs(rng, 60), docs_per_file=20))
    a = WindowSampler(s, seq_len=16, seed=7, with_doc_ids=True)
    b = WindowSampler(s, seq_len=16, seed=7, with_doc_ids=True)
    w1 = a.sample(5)
    np.testing.assert_array_equal(w1.inputs[:, 1:], w1.targets[:, :-1])
    assert w1.inputs.dtype == np.int64 and w1.doc_ids.shape == (5, 16)
    np.testing.assert_array_equal(w1.inputs, b.sample(5).inputs)
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able
    nxt = a.sample(4).inputs
    c = WindowSampler(s, seq_len=16, seed=999)
    c.load_state_dict(state)
    np.testing.assert_array_equal(c.sample(4).inputs, nxt)
    assert not np.array_equal(WindowSampler(s, 16, seed=8).sample(5).inputs, w1.inputs)
    # Every window lies inside the stream and matches a direct read.
    for st in a.draw_starts(200):
        assert 0 <= st <= s.num_tokens - 17


def test_eval_windows_are_disjoint(tmp_path, write_stream: Callable):
    s = TokenStream(write_stream(tmp_path / "s", [[5] * 99]))  # 100 tokens
    st = eval_windows(s, 10, 50)
    assert st.tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]  # the last needs token 90..100


@pytest.mark.parametrize("repeats", [0.4, 1.0, 2.5, 3.4])
def test_epoch_sampler_sees_every_window_floor_or_ceil_of_the_repeat_factor(
        tmp_path, write_stream: Callable, repeats: float):
    rng = np.random.default_rng(3)
    s = TokenStream(write_stream(tmp_path / "s", _docs(rng, 120)))
    seq = 8
    sampler = EpochSampler(s, seq, seed=5)
    n = sampler.num_windows
    assert n == (s.num_tokens - 1) // seq
    drawn = round(repeats * n)
    starts = np.concatenate([sampler.draw_starts(k) for k in [7] * (drawn // 7) + [drawn % 7]])
    assert np.all(starts % seq == 0) and starts.max() + seq + 1 <= s.num_tokens
    seen = np.bincount(starts // seq, minlength=n)
    assert set(seen.tolist()) <= {int(np.floor(repeats)), int(np.ceil(repeats))}
    assert seen.sum() == drawn and sampler.epochs == pytest.approx(drawn / n)
    # every token before the last partial window is a target floor(r) or ceil(r) times
    token_seen = np.repeat(seen, seq)
    assert set(token_seen.tolist()) <= {int(np.floor(repeats)), int(np.ceil(repeats))}
    # a new order each epoch, and a different one for another seed
    one = EpochSampler(s, seq, seed=5).draw_starts(2 * n)
    assert sorted(one[:n].tolist()) == sorted(one[n:].tolist())
    assert not np.array_equal(one[:n], one[n:])
    assert not np.array_equal(EpochSampler(s, seq, seed=6).draw_starts(n), one[:n])


def test_epoch_sampler_resumes_exactly_across_an_epoch_boundary(tmp_path,
                                                                write_stream: Callable):
    rng = np.random.default_rng(4)
    s = TokenStream(write_stream(tmp_path / "s", _docs(rng, 50), docs_per_file=20))
    a = EpochSampler(s, 16, seed=11, with_doc_ids=True)
    n = a.num_windows
    a.draw_starts(n - 3)  # the next batch crosses into epoch 1
    state = json.loads(json.dumps(a.state_dict()))
    nxt = a.sample(10)
    b = EpochSampler(s, 16, seed=0, with_doc_ids=True)
    b.load_state_dict(state)
    again = b.sample(10)
    np.testing.assert_array_equal(again.inputs, nxt.inputs)
    np.testing.assert_array_equal(again.doc_ids, nxt.doc_ids)
    np.testing.assert_array_equal(b.draw_starts(2 * n), a.draw_starts(2 * n))
    with pytest.raises(ValueError, match="random_windows"):
        b.load_state_dict(WindowSampler(s, 16, seed=1).state_dict())
    with pytest.raises(ValueError, match="seq_len 16"):
        EpochSampler(s, 8, seed=1).load_state_dict(state)
    assert isinstance(make_sampler("random_windows", s, 16, 1), WindowSampler)
    with pytest.raises(ValueError, match="data.sampler"):
        make_sampler("shuffled", s, 16, 1)


def test_eval_plan_scores_every_target_once_and_subset_is_fixed(tmp_path,
                                                               write_stream: Callable):
    rng = np.random.default_rng(5)
    docs = _docs(rng, 30)
    s = TokenStream(write_stream(tmp_path / "s", docs))
    plan = eval_plan(s, 16)
    covered = np.zeros(s.num_tokens, dtype=int)
    w = plan.weights(np.arange(len(plan)))
    for i, start in enumerate(plan.starts):
        covered[start + 1:start + 17] += w[i].astype(int)
    assert covered[0] == 0 and np.all(covered[1:] == 1)
    assert plan.window_tokens().sum() == s.num_tokens - 1 == plan.doc_tokens().sum()
    lengths = [len(d) + 1 for d in docs]
    assert plan.doc_tokens().tolist() == [lengths[0] - 1] + lengths[1:]
    docs_of = plan.target_docs(np.arange(len(plan)))
    assert np.bincount(docs_of[w.astype(bool)], minlength=len(docs)).tolist() == \
        plan.doc_tokens().tolist()
    sub = eval_subset(plan, 5, seed=0)
    assert len(sub) == 5 and np.array_equal(sub, eval_subset(plan, 5, seed=0))
    assert len(set(sub.tolist())) == 5 and np.all(np.diff(sub) > 0)
    assert np.array_equal(eval_subset(plan, 10**6), np.arange(len(plan)))


# ---- config loader ---------------------------------------------------------------------------


def test_yaml_subset_matches_pyyaml_on_job_file(repo_root: Path):
    yaml = pytest.importorskip("yaml")
    path = repo_root / "jobs" / "train.yaml"
    assert load_config_file(path) == yaml.safe_load(path.read_text())


def test_yaml_subset_matches_pyyaml_on_snippets():
    yaml = pytest.importorskip("yaml")
    text = """
# comment
job: train   # trailing comment
a:
  b: 1
  c: -2.5e-3
  d: [1, 2, "x, y", {e: true}]
  e: null
  f: 'it''s'
  g: "a#b"
  h: 6.0e-4
  i: 1_000
lst:
  - 1
  - name: one
    path: out/x
  - [3, 4]
seq_same_indent:
- a
- b
empty: {}
s: plain text here
"""
    assert loads_yaml(text) == yaml.safe_load(text)
    # YAML 1.2 floats: PyYAML (YAML 1.1) would read "6e-4" as a string; a learning rate
    # written that way must still be a number.
    assert loads_yaml("lr: 6e-4") == {"lr": 6e-4}


def test_yaml_subset_rejects_unsupported():
    with pytest.raises(ConfigError):
        loads_yaml("a: &anchor 1\n")
    with pytest.raises(ConfigError):
        loads_yaml("a: 1\n   b: 2\n")
    with pytest.raises(ConfigError):
        loads_yaml("a: 1\na: 2\n")


def test_merge_overrides_dotted_and_nested():
    base = {"train": {"lr": 1.0, "max_steps": 5}, "data": {"seq_len": 8}}
    out = merge_overrides(base, {"train.max_steps": 10, "data": {"seq_len": 16}, "new.x": 1})
    assert out == {"train": {"lr": 1.0, "max_steps": 10}, "data": {"seq_len": 16},
                   "new": {"x": 1}}
    assert base["train"]["max_steps"] == 5


def test_model_package_imports_only_torch_numpy_pyarrow_and_stdlib(repo_root: Path):
    """The GPU machine has torch, numpy and pyarrow only (no PyYAML, no matplotlib).

    The one module outside model/ it may use is tokenizer.token_stream (numpy and pyarrow
    only; tests/tokenizer/test_token_stream.py imports it with everything else blocked).
    """
    import ast
    import sys

    allowed_packages = {"torch", "numpy", "pyarrow", "model", "__future__"}
    allowed_modules = {"tokenizer.token_stream"}
    # triton ships with PyTorch's CUDA builds only: allowed inside try/except ImportError
    # (model/rope.py runs its PyTorch path without it)
    optional_packages = {"triton"}

    def catches_import_error(handler: ast.ExceptHandler) -> bool:
        names = ([handler.type] if not isinstance(handler.type, ast.Tuple)
                 else handler.type.elts)
        return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                   for n in names)

    for path in sorted((repo_root / "model").glob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try)
                   and any(catches_import_error(h) for h in node.handlers)
                   for stmt in node.body for inner in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = (top in allowed_packages or name in allowed_modules
                      or (top in optional_packages and id(node) in guarded))
                assert ok or top in sys.stdlib_module_names, f"{path.name}: {name}"


def test_reads_streams_written_by_the_tokenizer_writer(tmp_path):
    """Contract with the writer in tokenizer/token_stream.py (the tokenize step's writer)."""
    docs = [[5, 6, 7], [], [8] * 30, [9, 10]]
    p1 = write_token_stream(docs[:2], tmp_path, "part-00000.arrow", "uint16", eos_id=1,
                            batch_tokens=4)
    p2 = write_token_stream(docs[2:], tmp_path, "part-00001.arrow", "uint16", eos_id=1)
    p3 = write_token_stream([], tmp_path, "part-00002.arrow", "uint16", eos_id=1)
    write_manifest(tmp_path, [p1, p2, p3], "uint16", 1, 300, "h")
    s = TokenStream(tmp_path)
    flat = [t for d in docs for t in d + [1]]
    assert s.num_tokens == len(flat) and s.num_docs == len(docs)
    assert s.read(0, len(flat)).tolist() == flat
    assert s.doc_ids(0, len(flat)).tolist() == [i for i, d in enumerate(docs) for _ in d + [1]]
