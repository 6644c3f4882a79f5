"""The step contract, checked for every registered step on real documents.

Each step in :func:`pipeline.core.registry.step_classes` runs over real webmix records
(raw HTML for ``extract_v1``, its extracted text for the others) with real models built
here from ../shared/data. A step must: yield Documents; account for every input document
exactly once (yielded, or dropped with a non-empty reason); as a filter, yield no more
than it receives; write only metadata keys it declares, with values of the declared
Arrow type (the writer accepts and round-trips them); pickle after ``setup`` (and
``load``) and give the same output after unpickling. A step without a recipe in
:data:`RECIPES` fails the test, so no new step skips the contract.
"""

from __future__ import annotations

import copy
import gzip
import json
import pickle
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.core.document import Document
from pipeline.core.registry import is_global, step_classes
from pipeline.core.step import Filter, GlobalStep, Mapper, StageShard, Step, StepContext, StepStats
from pipeline.execution.executor import LocalExecutor
from pipeline.io.readers import ReadOptions, read_shard
from pipeline.io.writer import read_documents_parquet, write_documents_parquet

EOT = "<|endoftext|>"

Get = Callable[[str], Any]  # fetches a session fixture by name (models are built on demand)

#: step name -> (input: "html" or "text", options built from the session fixtures)
RECIPES: dict[str, tuple[str, Callable[[Get], dict[str, Any]]]] = {
    "extract_v1": ("html", lambda get: {}),
    "langid_v1": ("text", lambda get: {"languages": ["en"]}),
    "langid_v2": ("text", lambda get: {"languages": ["en"]}),
    "gopher_quality_v1": ("text", lambda get: {}),
    "gopher_repetition_v1": ("text", lambda get: {}),
    "c4_v1": ("text", lambda get: {}),
    "badwords_v1": ("text", lambda get: {
        "lists": str(get("shared_data") / "lists" / "ldnoobw"), "max_matches": 1}),
    "url_filter_v1": ("text", lambda get: {
        "lists": str(get("shared_data") / "lists" / "url_blocklist"),
        "cache_dir": str(get("url_domain_cache"))}),
    "pii_v1": ("text", lambda get: {}),
    "whitespace_v1": ("text", lambda get: {}),
    "control_shuffle_words_v1": ("text", lambda get: {"fraction": 0.5}),
    "toxicity_v1": ("text", lambda get: {"mode": "line", "drop_toxic_lines": True,
                                         "selection": "sample", "temperature": 0.1}),
    # the contract's documents carry no score: every one is dropped as no_score
    "select_top_v1": ("text", lambda get: {"field": "perplexity", "fraction": 0.5}),
    "kenlm_v1": ("text", lambda get: {
        "model": str(get("shared_data") / "models" / "lmplz_reference" / "order5.binary"),
        "require_meta": False,
        "cutoff_csv": str(get("shared_data") / "models" / "ccnet_perplexity_cutoff.csv"),
        "keep_buckets": ["head", "middle"]}),
    "fasttext_quality_v1": ("text", lambda get: {"model": str(get("fasttext_model"))}),
    "fasttext_quality_top_v1": ("text", lambda get: {"model": str(get("fasttext_model")),
                                                     "fraction": 0.5}),
    "dsir_v1": ("text", lambda get: {"target": [str(get("dsir_target"))], "fraction": 0.5}),
    "dedup_exact_v1": ("text", lambda get: {"partitions": 2}),
    "dedup_bloom_v1": ("text", lambda get: {"mode": "paragraph", "max_filter_bytes": 1024}),
    "decontaminate_v1": ("text", lambda get: {
        "evals": [str(get("shared_data") / "eval" / "wiki_val.jsonl.gz")]}),
    "dedup_lines_v1": ("text", lambda get: {"partitions": 2, "min_count": 2}),
    "dedup_minhash_v1": ("text", lambda get: {"partitions": 2}),
    "tokenize_v1": ("text", lambda get: {"tokenizer": str(get("bpe_tokenizer")),
                                         "output": str(get("tmp_root") / "tokens")}),
}


def _jsonl_texts(path: Path, n: int, field: str = "text", stride: int = 1) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)[field] for line in islice(f, 0, n * stride, stride)]


def _write_jsonl(texts: list[str], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract")


@pytest.fixture(scope="session")
def html_docs(shared_data: Path) -> list[Document]:
    """40 webmix records as the WARC reader yields them (HTML, text/html)."""
    path = str(shared_data / "webmix" / "webmix-00000.warc.gz")
    docs = list(islice(read_shard(path, "warc", 0, 1, ReadOptions(), StepStats()), 40))
    assert len(docs) == 40
    return docs


@pytest.fixture(scope="session")
def text_docs(html_docs: list[Document]) -> list[Document]:
    """The records extracted by ``extract_v1``, plus an exact copy of the first one."""
    from pipeline.steps.extract import Extract

    step = Extract()
    step.setup()
    docs = list(step.run([copy.deepcopy(d) for d in html_docs], StepContext(StepStats())))
    assert len(docs) >= 20
    first = docs[0]
    return docs + [Document(first.id + "-copy", first.text, first.url, first.media_type,
                            first.source)]


@pytest.fixture(scope="session")
def fasttext_model(shared_data: Path, tmp_root: Path) -> Path:
    """A small hq/lq fastText model: 200 Wikipedia articles vs 200 SpamAssassin emails."""
    from pipeline.text.quality import TrainOptions, train_classifier

    pos = _write_jsonl(_jsonl_texts(shared_data / "reference" / "wiki_ref.jsonl.gz", 200),
                       tmp_root / "pos.jsonl")
    neg = _write_jsonl(_jsonl_texts(shared_data / "noisy" / "spamassassin.jsonl.gz", 200, "raw",
                                    stride=29), tmp_root / "neg.jsonl")
    model = tmp_root / "quality.bin"
    train_classifier([str(pos)], [str(neg)], model,
                     TrainOptions(epoch=5, dim=16, bucket=20_000), show_progress=False)
    return model


@pytest.fixture(scope="session")
def dsir_target(shared_data: Path, tmp_root: Path) -> Path:
    """The DSIR target: 100 wiki_ref articles."""
    return _write_jsonl(_jsonl_texts(shared_data / "reference" / "wiki_ref.jsonl.gz", 100),
                        tmp_root / "target.jsonl")


@pytest.fixture(scope="session")
def bpe_tokenizer(shared_data: Path, tmp_root: Path) -> Path:
    """A 600-token byte-level BPE tokenizer trained on 50 wiki_ref articles."""
    from tokenizer.encoder import Tokenizer
    from tokenizer.trainer import train_bpe

    corpus = tmp_root / "bpe_corpus.txt"
    corpus.write_text("\n".join(_jsonl_texts(shared_data / "reference" / "wiki_ref.jsonl.gz",
                                             50)), encoding="utf-8")
    vocab, merges = train_bpe(str(corpus), 600, [EOT], workers=1)
    out = tmp_root / "bpe"
    Tokenizer(vocab, merges, [EOT]).save(out)
    return out


def _fresh(docs: list[Document]) -> list[Document]:
    return [copy.deepcopy(d) for d in docs]


def _run_local(step: Step, docs: list[Document]) -> tuple[list, list, StepStats]:
    ctx = StepContext(StepStats(), lambda d, s, r: removed.append((d, s, r)))
    removed: list[tuple[Document, str, str]] = []
    out = list(step.run(iter(docs), ctx))
    return out, removed, ctx.stats


def _stage(docs: list[Document], root: Path) -> list[StageShard]:
    """Two stage shards of the documents (the second in two parts), as the runner writes."""
    root.mkdir(parents=True, exist_ok=True)
    half = len(docs) // 2
    parts = [(docs[:half],), (docs[half:half + 5], docs[half + 5:])]
    shards = []
    for s, chunks in enumerate(parts):
        files = []
        for p, chunk in enumerate(chunks):
            path = root / f"{s:05d}-shard-{p:05d}.parquet"
            write_documents_parquet(chunk, path, {})
            files.append(str(path))
        shards.append(StageShard(f"{s:05d}-shard", tuple(files)))
    return shards


def _run_global_shards(step: GlobalStep, shards: list[StageShard], workdir: Path
                       ) -> tuple[list, list, StepStats]:
    out, removed, stats = [], [], StepStats()
    for shard in shards:
        step.load(str(workdir), shard.shard_id)
        o, r, s = _run_local(step, list(shard.documents()))
        out += o
        removed += r
        stats.merge(s)
    return out, removed, stats


def _written_keys(doc: Document, before: dict[str, dict[str, Any]]) -> set[str]:
    old = before.get(doc.id, {})
    return {k for k, v in doc.metadata.items() if k not in old or old[k] != v}


def _check_contract(step: Step, inputs: list[Document], out: list, removed: list,
                    stats: StepStats, tmp: Path) -> None:
    before = {d.id: copy.deepcopy(d.metadata) for d in inputs}
    assert all(isinstance(d, Document) for d in out), "a step must yield Documents"
    out_ids = [d.id for d in out]
    removed_ids = [d.id for d, _, _ in removed]
    assert sorted(out_ids + removed_ids) == sorted(d.id for d in inputs), \
        "every input document must be yielded or dropped, exactly once"
    if isinstance(step, Filter):
        assert len(out) <= len(inputs)
    if isinstance(step, Mapper):
        assert len(out) == len(inputs)
    for _, step_name, reason in removed:
        assert step_name == step.name
        assert isinstance(reason, str) and reason.strip(), "a drop needs a reason"
    assert sum(stats.dropped.values()) == len(removed)
    assert all(isinstance(r, str) and r.strip() for r in stats.dropped)
    declared = step.metadata_fields
    for doc in [*out, *(d for d, _, _ in removed)]:
        written = _written_keys(doc, before)
        assert written <= declared.keys(), (
            f"{step.name} writes undeclared metadata {sorted(written - declared.keys())}")
        for key in written:
            pa.array([doc.metadata[key]], type=declared[key])  # raises on a wrong type
    path = tmp / "out.parquet"
    write_documents_parquet(out, path, declared)
    back = list(read_documents_parquet(path))
    assert [d.id for d in back] == out_ids
    for doc, read in zip(out, back, strict=True):
        assert read.text == doc.text
        expect = {k: pa.array([v], type=declared[k]).to_pylist()[0]
                  for k, v in doc.metadata.items() if v is not None}
        assert read.metadata == expect


def _same_output(a: list[Document], b: list[Document]) -> None:
    assert [(d.id, d.text, d.metadata) for d in a] == [(d.id, d.text, d.metadata) for d in b]


@pytest.mark.parametrize("name", sorted(step_classes()))
def test_step_contract(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if name not in RECIPES:
        pytest.fail(f"registered step {name!r} has no contract recipe: add one to RECIPES in "
                    f"{Path(__file__).name} (its input and real options)")
    kind, options = RECIPES[name]
    cls = step_classes()[name]
    step = cls(cls.Options(**options(request.getfixturevalue)))
    step.check()
    step.setup()
    docs = request.getfixturevalue("html_docs" if kind == "html" else "text_docs")
    if is_global(cls):
        assert isinstance(step, GlobalStep)
        shards = _stage(_fresh(docs), tmp_path / "stage")
        workdir = tmp_path / "job" / "_global" / "stage-1"
        workdir.mkdir(parents=True)
        step.prepare(shards, str(workdir), LocalExecutor())
        inputs = [d for s in shards for d in s.documents()]
        out, removed, stats = _run_global_shards(step, shards, workdir)
        clone = pickle.loads(pickle.dumps(step))
        clone.setup()
        again, _, _ = _run_global_shards(clone, shards, workdir)
    else:
        inputs = _fresh(docs)
        out, removed, stats = _run_local(step, _fresh(docs))
        clone = pickle.loads(pickle.dumps(step))
        clone.setup()
        again, _, _ = _run_local(clone, _fresh(docs))
    _check_contract(step, inputs, out, removed, stats, tmp_path)
    _same_output(out, again)


def test_recipes_name_only_registered_steps() -> None:
    assert set(RECIPES) <= set(step_classes())
