"""The ``tokenize_v1`` pipeline step: stream contents, resume after a kill or a failed shard
(in this process), Ray end to end."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard, StepContext, StepStats
from pipeline.execution.executor import LocalExecutor, TaskFailures
from pipeline.execution.runner import run_job
from pipeline.io.writer import write_documents_parquet
from pipeline.steps.tokenize import Tokenize, TokenizeOptions
from tokenizer import Tokenizer
from tokenizer.formats import tokenizer_hash
from tokenizer.gpt2_files import gpt2_file_paths
from tokenizer.token_stream import TokenStream

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def real_docs(shared_data: Path) -> Callable[[int], list[Document]]:
    """``n ->`` `n` held-out Wikipedia articles, plus a German/Chinese/emoji one and an empty one."""

    def make(n: int) -> list[Document]:
        docs = []
        path = shared_data / "eval" / "wiki_val.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for i, line in enumerate(handle):
                if i == n:
                    break
                docs.append(Document(f"w{i}", json.loads(line)["text"][:4000]))
        docs.append(Document("multi", "Grüße aus München! 你好，世界 🤗 " + EOT + " after"))
        docs.append(Document("empty", ""))
        return docs

    return make


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    encoder_json, vocab_bpe = gpt2_file_paths()
    out = tmp_path_factory.mktemp("gpt2")
    Tokenizer.from_files(encoder_json, vocab_bpe, [EOT]).save(out)
    return out


def make_shards(root: Path, docs: list[Document], per_shard: int) -> list[StageShard]:
    """Write documents as Parquet stage parts, `per_shard` documents a shard, two parts each."""
    shards = []
    for s, start in enumerate(range(0, len(docs), per_shard)):
        chunk = docs[start : start + per_shard]
        half = max(1, len(chunk) // 2)
        files = []
        for p, part in enumerate([chunk[:half], chunk[half:]]):
            if part:
                path = root / f"s{s}-{p}.parquet"
                write_documents_parquet(part, path, {}, "none")
                files.append(str(path))
        shards.append(StageShard(f"shard{s:02d}", tuple(files)))
    return shards


def test_stream_holds_each_document_then_eos(gpt2_dir: Path, real_docs: Callable,
                                             tmp_path: Path) -> None:
    docs = real_docs(30)
    shards = make_shards(tmp_path, docs, per_shard=9)
    workdir = tmp_path / "out" / "_global" / "stage-1"
    step = Tokenize(TokenizeOptions(tokenizer=str(gpt2_dir), batch_docs=4))
    step.prepare(list(reversed(shards)), str(workdir), LocalExecutor())
    stream_dir = tmp_path / "out" / "tokens"
    manifest = json.loads((stream_dir / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["eos_id"] == 50256
    assert manifest["vocab_size"] == 50257
    assert manifest["tokenizer_hash"] == tokenizer_hash(gpt2_dir)
    assert manifest["total_docs"] == len(docs) == sum(f["num_docs"] for f in manifest["files"])
    tok = Tokenizer.load(gpt2_dir)
    expected = [i for d in docs for i in tok.encode(d.text) + [50256]]
    stream = TokenStream(stream_dir)
    assert stream.num_tokens == manifest["total_tokens"] == len(expected)
    assert np.array_equal(stream.read(0, len(expected)), np.array(expected))
    multi = tok.encode(docs[-2].text)
    assert 50256 in multi  # the EOT inside the text is the special token, as in encode()
    # Documents pass through unchanged, with their token counts.
    for shard in shards:
        step.load(str(workdir), shard.shard_id)
        ctx = StepContext(StepStats(), None, shard.shard_id)
        out = list(step.run(shard.documents(), ctx))
        assert [d.metadata["num_tokens"] for d in out] == [len(tok.encode(d.text)) for d in out]
        assert ctx.stats.counters["tokens"] == sum(d.metadata["num_tokens"] for d in out)


def test_resume_redoes_only_unfinished_parts(gpt2_dir: Path, real_docs: Callable,
                                             tmp_path: Path) -> None:
    shards = make_shards(tmp_path, real_docs(20), per_shard=6)
    workdir = tmp_path / "out" / "_global" / "stage-1"
    step = Tokenize(TokenizeOptions(tokenizer=str(gpt2_dir), dtype="uint32"))
    step.prepare(shards, str(workdir), LocalExecutor())
    stream_dir = tmp_path / "out" / "tokens"
    first = (stream_dir / "manifest.json").read_text()
    assert json.loads(first)["dtype"] == "uint32"
    # A kill after part 1 was written but before it was marked done, and part 2 half written.
    (stream_dir / "part-00001.done.json").unlink()
    (stream_dir / "part-00002.arrow").write_bytes(b"partial")
    kept = (stream_dir / "part-00000.arrow").stat().st_mtime_ns
    os.utime(stream_dir / "part-00000.arrow", ns=(kept - 10**9, kept - 10**9))
    step.prepare(shards, str(workdir), LocalExecutor())
    assert (stream_dir / "manifest.json").read_text() == first
    assert (stream_dir / "part-00000.arrow").stat().st_mtime_ns == kept - 10**9
    assert TokenStream(stream_dir).num_tokens == json.loads(first)["total_tokens"]
    other = Tokenize(TokenizeOptions(tokenizer=str(gpt2_dir), dtype="uint16"))
    with pytest.raises(ValueError, match="another tokenizer"):
        other.prepare(shards, str(workdir), LocalExecutor())


def test_a_failed_shard_stops_prepare_and_a_rerun_finishes(gpt2_dir: Path, real_docs: Callable,
                                                           tmp_path: Path) -> None:
    """Every shard is tokenized; the error names the failed one and its own exception; a
    rerun after the input is back redoes only that part."""
    shards = make_shards(tmp_path, real_docs(12), per_shard=4)
    workdir = tmp_path / "out" / "_global" / "stage-1"
    stream_dir = tmp_path / "out" / "tokens"
    hidden = Path(shards[1].files[0])
    hidden.rename(hidden.with_suffix(".away"))
    step = Tokenize(TokenizeOptions(tokenizer=str(gpt2_dir)))
    with pytest.raises(TaskFailures, match="shard01: FileNotFoundError") as info:
        step.prepare(shards, str(workdir), LocalExecutor())
    assert [o.name for o in info.value.failures] == ["shard01"]
    assert sorted(p.name for p in stream_dir.glob("*.done.json")) == [
        "part-00000.done.json", "part-00002.done.json", "part-00003.done.json"]
    assert not (stream_dir / "manifest.json").exists()
    hidden.with_suffix(".away").rename(hidden)
    done = (stream_dir / "part-00002.arrow").stat().st_mtime_ns
    step.prepare(shards, str(workdir), LocalExecutor())
    assert (stream_dir / "part-00002.arrow").stat().st_mtime_ns == done
    assert TokenStream(stream_dir).num_docs == 14


def test_bad_options(gpt2_dir: Path, real_docs: Callable, tmp_path: Path) -> None:
    shards = make_shards(tmp_path, real_docs(2), per_shard=5)
    step = Tokenize(TokenizeOptions(tokenizer=str(gpt2_dir), eos_token="<|eos|>"))
    with pytest.raises(ValueError, match="not a special token"):
        step.prepare(shards, str(tmp_path / "o" / "_global" / "stage-1"), LocalExecutor())
    with pytest.raises(ValueError):
        TokenizeOptions(tokenizer=str(gpt2_dir), dtype="int8")


def test_job_on_ray_end_to_end(ray_local, gpt2_dir: Path, real_docs: Callable,
                               tmp_path: Path) -> None:
    docs = real_docs(40)
    inputs = []
    for k in range(2):
        path = tmp_path / f"in{k}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for d in docs[k::2]:
                handle.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
        inputs.append(str(path))
    out = tmp_path / "job"
    job = {
        "inputs": inputs,
        "output": str(out),
        "steps": [{"tokenize_v1": {"tokenizer": str(gpt2_dir)}}],
        "write": {"checkpoint_docs": 7},
    }
    run_job(job)
    rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    tok = Tokenizer.load(gpt2_dir)
    assert len(rows) == len([d for d in docs if d.text])  # the reader skips empty documents
    assert all(r["num_tokens"] == len(tok.encode(r["text"])) for r in rows)
    stream = TokenStream(out / "tokens")
    assert stream.num_docs == len(rows) and stream.num_tokens == sum(r["num_tokens"] + 1 for r in rows)
    before = (out / "tokens" / "manifest.json").read_text()
    run_job(job)
    assert (out / "tokens" / "manifest.json").read_text() == before


def test_repeated_ids_killed_mid_shard_get_their_own_counts(gpt2_dir: Path, real_docs: Callable,
                                                            tmp_path: Path) -> None:
    """A shard that repeats ids, killed after its second part and rerun: every row's
    ``num_tokens`` is its own text's count, as in an uninterrupted run."""
    from pipeline.execution import faults

    docs = [d for d in real_docs(30) if d.text]
    path = tmp_path / "in.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for j, d in enumerate(docs):
            handle.write(json.dumps({"id": f"r{j % 4}", "text": d.text}) + "\n")
    out = tmp_path / "job"
    job = {"executor": "local", "inputs": [str(path)], "output": str(out),
           "steps": [{"tokenize_v1": {"tokenizer": str(gpt2_dir)}}],
           "write": {"checkpoint_docs": 7}}
    with faults.inject_failures([("stage-1", 1)]):
        run_job(job)
    assert not (out / "_SUCCESS").exists()
    run_job(job)
    assert (out / "_SUCCESS").exists()
    rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    tok = Tokenizer.load(gpt2_dir)
    assert [r["text"] for r in rows] == [d.text for d in docs]
    assert [r["num_tokens"] for r in rows] == [len(tok.encode(d.text)) for d in docs]
