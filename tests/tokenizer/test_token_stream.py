"""The packed token stream (tokenizer/token_stream.py): written by the tokenize step, read by
model/ on a GPU machine that has only torch, numpy and pyarrow."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from model.data import WindowSampler
from tokenizer.token_stream import (
    TokenStream,
    dtype_for_vocab,
    read_part_offsets,
    write_manifest,
    write_token_stream,
)

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def docs_ids(shared_data: Path) -> list[list[int]]:
    """GPT-2 ids of 60 real Wikipedia articles (one list per document, one of them empty)."""
    # Imported here: this module must collect where only numpy, pyarrow and torch exist.
    pytest.importorskip("regex")
    pytest.importorskip("tiktoken")
    from tokenizer import Tokenizer
    from tokenizer.gpt2_files import gpt2_file_paths

    encoder_json, vocab_bpe = gpt2_file_paths()
    tok = Tokenizer.from_files(encoder_json, vocab_bpe, [EOT])
    out = []
    with gzip.open(shared_data / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as handle:
        for _ in range(60):
            out.append(tok.encode(json.loads(next(handle))["text"][:3000]))
    out[7] = []
    return out


def write_stream(tmp: Path, docs: list[list[int]], dtype: str, split: int, batch: int) -> dict:
    parts = [
        write_token_stream(iter(docs[:split]), tmp, "part-00000.arrow", dtype, 50256, batch),
        write_token_stream(iter(docs[split:]), tmp, "part-00001.arrow", dtype, 50256, batch),
    ]
    return write_manifest(tmp, parts, dtype, 50256, 50257, "0" * 64)


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_model_reader_sees_exactly_what_was_written(
    tmp_path: Path, docs_ids: list[list[int]], dtype: str
) -> None:
    manifest = write_stream(tmp_path, docs_ids, dtype, 25, batch=5000)
    expected = np.concatenate([np.array(d + [50256]) for d in docs_ids])
    assert manifest["total_tokens"] == len(expected)
    assert manifest["total_docs"] == 60
    assert [f["num_docs"] for f in manifest["files"]] == [25, 35]
    stream = TokenStream(tmp_path)
    assert stream.dtype == np.dtype(dtype)
    assert stream.num_tokens == len(expected)
    assert np.array_equal(stream.read(0, len(expected)), expected)
    starts = np.cumsum([0] + [len(d) + 1 for d in docs_ids[:-1]])
    assert np.array_equal(stream.doc_starts, starts)
    assert not list(tmp_path.glob(".*tmp*"))


def test_parts_have_several_batches_and_offsets(tmp_path: Path, docs_ids: list[list[int]]) -> None:
    info = write_token_stream(iter(docs_ids), tmp_path, "p.arrow", "uint16", 50256, 2000)
    reader = pa.ipc.open_file(pa.memory_map(str(tmp_path / "p.arrow")))
    assert reader.num_record_batches > 3
    assert reader.schema.field("tokens").type == pa.list_(pa.uint16())
    offsets = read_part_offsets(tmp_path / "p.arrow")
    assert list(np.diff(offsets)) == [len(d) + 1 for d in docs_ids]
    assert info.num_tokens == offsets[-1] and info.num_docs == 60


def test_windows_deterministic_with_boundaries(tmp_path: Path, docs_ids: list[list[int]]) -> None:
    write_stream(tmp_path, docs_ids, "uint16", 30, batch=1 << 20)
    stream = TokenStream(tmp_path)
    a = WindowSampler(stream, seq_len=128, seed=7, with_doc_ids=True).sample(8)
    b = WindowSampler(TokenStream(tmp_path), seq_len=128, seed=7, with_doc_ids=True).sample(8)
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.targets, b.targets)
    assert np.array_equal(a.inputs[:, 1:], a.targets[:, :-1])
    # A new document starts right after each EOS in the inputs.
    for row, docs in zip(a.inputs, a.doc_ids, strict=True):
        after_eos = np.flatnonzero(row[:-1] == 50256) + 1
        assert all(docs[i] == docs[i - 1] + 1 for i in after_eos)


def test_ids_must_fit_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_token_stream(iter([[1, 70000]]), tmp_path, "p.arrow", "uint16", 0)
    assert not list(tmp_path.iterdir())
    assert dtype_for_vocab(50257) == "uint16" and dtype_for_vocab(65536) == "uint16"
    assert dtype_for_vocab(65537) == "uint32"
    info = write_token_stream(iter([[1, 70000]]), tmp_path, "p.arrow", "uint32", 0)
    assert info.num_tokens == 3


# What a GPU machine lacks: importing any of these there fails.
_BLOCKED = ("regex", "tiktoken", "ray", "pydantic", "fasttext", "kenlm", "yaml", "tqdm")


@pytest.fixture
def run_fresh(repo_root: Path) -> Callable[[str], subprocess.CompletedProcess]:
    """``code ->`` the finished run of `code` in a fresh interpreter from the repository root."""
    return lambda code: subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                                       cwd=repo_root, capture_output=True, text=True, timeout=120)


def test_stream_and_model_data_import_without_pipeline_packages(run_fresh: Callable) -> None:
    """model/ reads streams on a GPU machine that has only torch, numpy and pyarrow."""
    run = run_fresh(f"""
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {_BLOCKED!r}:
                    raise ImportError(f"blocked: {{name}}")
                return None

        sys.meta_path.insert(0, Blocker())
        for name in {_BLOCKED!r}:
            sys.modules.pop(name, None)
        import tokenizer.token_stream, model.data
        from tokenizer.token_stream import TokenStream
        assert model.data.WindowSampler and TokenStream
        try:
            import regex
        except ImportError:
            print("blocked")
    """)
    assert run.returncode == 0, run.stderr
    # The blocker itself works: a blocked package does not import.
    assert run.stdout.strip() == "blocked"


def test_formats_does_not_import_the_encoder(run_fresh: Callable) -> None:
    """File formats are plain data; only the encoder builds a Tokenizer (no import cycle)."""
    pytest.importorskip("regex")
    run = run_fresh("""
        import sys
        import tokenizer.formats
        print("tokenizer.encoder" in sys.modules)
    """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
