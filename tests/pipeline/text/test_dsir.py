"""DSIR features, weights and Gumbel top-k; the global selection steps; a whole job.

Covers ``dsir_v1`` and ``fasttext_quality_top_v1`` (both GlobalSteps sharing
:mod:`pipeline.text.selection`) in this process (:class:`LocalExecutor`) and on Ray, a
crawl job running kenlm_v1, fasttext_quality_v1 and dsir_v1 through the runner, and the
``train_filters`` job and ``pipeline dsir fit`` that fit the models.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard, StepContext, StepStats
from pipeline.execution.executor import Executor, LocalExecutor, RayExecutor, TaskFailures
from pipeline.io.writer import write_documents_parquet
from pipeline.text.dsir import (
    DSIRModel,
    FeatureOptions,
    count_features,
    feature_buckets,
    gumbel,
    log_probs,
)


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory,
           jsonl_texts: Callable[..., list[str]]) -> dict:
    """Target file (100 wiki_ref articles) and a mixed pool: 30 held-out articles, 60 emails."""
    tmp = tmp_path_factory.mktemp("dsir")
    target = tmp / "target.jsonl"
    target.write_text("".join(json.dumps({"text": t}) + "\n" for t in
                              jsonl_texts(shared_data / "reference" / "wiki_ref.jsonl.gz", 100)))
    wiki = jsonl_texts(shared_data / "eval" / "wiki_val.jsonl.gz", 30)
    mail = jsonl_texts(shared_data / "noisy" / "spamassassin.jsonl.gz", 60, "raw", stride=97)
    docs = [Document(f"wiki-{i}", t, source="wiki") for i, t in enumerate(wiki)]
    docs += [Document(f"mail-{i}", t, source="mail") for i, t in enumerate(mail)]
    docs.append(Document("empty", "   \n", source="mail"))
    order = np.random.default_rng(0).permutation(len(docs))
    docs = [docs[i] for i in order]
    return {"tmp": tmp, "target": target, "docs": docs, "shared": shared_data,
            "texts": jsonl_texts}


def _stage_shards(docs: list[Document], folder: Path, n: int = 3) -> list[StageShard]:
    shards = []
    for s in range(n):
        part = folder / f"shard{s}.parquet"
        write_documents_parquet(docs[s::n], part, {})
        shards.append(StageShard(f"s{s}", (str(part),)))
    return shards


def _run_global(step, shards: list[StageShard], workdir: Path, chunk: int = 7,
                executor: Executor | None = None) -> list[Document]:
    """Run a GlobalStep as the runner does: prepare once (in this process unless ``executor``
    says otherwise), then load + run in chunks per shard."""
    step.prepare(shards, str(workdir), executor or LocalExecutor())
    kept = []
    for s in shards:
        step.load(str(workdir), s.shard_id)
        docs = list(s.documents())
        for i in range(0, len(docs), chunk):
            kept.extend(step.run(docs[i:i + chunk], StepContext(StepStats())))
    return kept


def test_features_are_stable_across_processes(repo_root: Path) -> None:
    opts = FeatureOptions(buckets=1000)
    text = "The Battle of Hastings, 1066.\nNormans won!"
    b = feature_buckets(text, opts)
    # 10 tokens (the battle of hastings , 0000 . normans won !): 10 unigrams + 9 bigrams
    assert b.size == 19 and b.min() >= 0 and b.max() < 1000
    code = ("from pipeline.text.dsir import feature_buckets, FeatureOptions;"
            f"print(feature_buckets({text!r}, FeatureOptions(buckets=1000)).tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, cwd=repo_root)
    assert json.loads(out.stdout) == b.tolist()
    assert feature_buckets("", opts).size == 0
    assert feature_buckets("word", FeatureOptions(buckets=1000, ngrams=1)).size == 1


def test_log_weight_prefers_target_like_text(corpus: dict) -> None:
    opts = FeatureOptions()
    from pipeline.text.corpus import iter_texts

    target, _ = count_features(iter_texts(str(corpus["target"])), opts)
    raw, n = count_features((d.text for d in corpus["docs"]), opts)
    assert n == len(corpus["docs"]) and raw.sum() > 0
    model = DSIRModel(target, raw, opts)
    w = {d.id: model.log_weight(d.text) for d in corpus["docs"]}
    assert w["empty"] is None
    wiki = [v for k, v in w.items() if k.startswith("wiki")]
    mail = [v for k, v in w.items() if k.startswith("mail")]
    assert np.median(wiki) > np.median(mail)
    # the weight is sum_j c_j (log p_t - log p_r) over the document's features
    d = corpus["docs"][0]
    counts = np.bincount(feature_buckets(d.text, opts), minlength=opts.buckets)
    expect = counts @ (log_probs(target, 1.0) - log_probs(raw, 1.0))
    assert w[d.id] == pytest.approx(expect)


def test_gumbel_top_k_samples_in_proportion_to_weights() -> None:
    """Gumbel-max over seeds picks item i with probability w_i / sum w."""
    weights = np.array([1.0, 2.0, 7.0])
    picks = Counter()
    for seed in range(4000):
        keys = [math.log(w) + gumbel(f"item{i}", seed) for i, w in enumerate(weights)]
        picks[int(np.argmax(keys))] += 1
    freq = np.array([picks[i] for i in range(3)]) / 4000
    assert np.allclose(freq, weights / weights.sum(), atol=0.03)
    assert gumbel("x", 1) == gumbel("x", 1) != gumbel("x", 2)


def test_model_save_load_and_mismatch(tmp_path: Path) -> None:
    from pipeline.text.model_meta import ModelMismatchError

    opts = FeatureOptions(buckets=50)
    model = DSIRModel(np.arange(50), np.ones(50, dtype=np.int64), opts)
    path = tmp_path / "m.npz"
    model.save(path, [])
    back = DSIRModel.load(path, opts)
    assert np.array_equal(back.target_counts, model.target_counts)
    # written under a temporary name ending in .npz, so np.savez adds no second suffix
    bare = tmp_path / "model"
    model.save(bare, [])
    assert np.array_equal(DSIRModel.load(bare, opts).raw_counts, model.raw_counts)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.npz", "m.npz.meta.json", "model", "model.meta.json"]
    with pytest.raises(ModelMismatchError, match="option buckets"):
        DSIRModel.load(path, FeatureOptions(buckets=60))
    path.write_bytes(b"garbage")
    with pytest.raises(ModelMismatchError):
        DSIRModel.load(path, opts)


def test_dsir_step_selects_k_across_shards(corpus: dict, tmp_path: Path) -> None:
    from pipeline.core.registry import get_step_class

    cls = get_step_class("dsir_v1")
    shards = _stage_shards(corpus["docs"], tmp_path / "stage")
    step = cls(cls.Options(target=[str(corpus["target"])], num_documents=25, seed=1))
    work = tmp_path / "work"
    kept = _run_global(step, shards, work)
    assert len(kept) == 25
    sources = Counter(d.source for d in kept)
    assert sources["wiki"] >= 20, sources
    assert all(isinstance(d.metadata["dsir_log_weight"], float) for d in kept)
    decision = json.loads((work / "decision.json").read_text())
    assert decision["k"] == 25 and decision["total"] == len(corpus["docs"])
    # the job-wide cut is the bounded radix select, equal to merging every weight in memory
    from pipeline.text.selection import global_threshold

    ranks = []
    for path in sorted((work / "scores").glob("*.npz")):
        with np.load(path) as z:
            ranks.append(z["rank"])
    assert decision["cut_fanouts"] >= 1 and decision["raw_features"] > 0
    assert decision["threshold"] == global_threshold(ranks, 25)
    # rerun: finished work is reused, same decision
    stamp = {p: p.stat().st_mtime_ns for p in (work / "scores").glob("*.npz")}
    kept2 = _run_global(cls(step.options), shards, work, chunk=50)
    assert sorted(d.id for d in kept2) == sorted(d.id for d in kept)
    assert stamp == {p: p.stat().st_mtime_ns for p in (work / "scores").glob("*.npz")}
    # another seed is another sample (same size), fraction works, annotate-only keeps all
    other = _run_global(cls(cls.Options(target=[str(corpus["target"])], num_documents=25,
                                        seed=2)), shards, tmp_path / "w2")
    assert len(other) == 25
    frac = _run_global(cls(cls.Options(target=[str(corpus["target"])], fraction=0.5)), shards,
                       tmp_path / "w3")
    assert len(frac) == math.ceil(0.5 * len(corpus["docs"]))
    every = _run_global(cls(cls.Options(target=[str(corpus["target"])])), shards,
                        tmp_path / "w4")
    assert len(every) == len(corpus["docs"])
    empty = [d for d in every if d.id == "empty"]
    assert empty[0].metadata["dsir_log_weight"] is None
    # a document prepare never saw is an error that says so
    step.load(str(work), "s0")
    with pytest.raises(KeyError, match="not scored"):
        list(step.run([Document("new", "unseen text")], StepContext(StepStats())))


def test_dsir_length_features_scores_a_fixed_length_example(corpus: dict,
                                                            tmp_path: Path) -> None:
    """With ``length_features`` a document's score is its mean log ratio times N: a text
    repeated three times scores the same (summed, it would score three times as much), and
    the step still selects mostly target-like documents."""
    from pipeline.core.registry import get_step_class
    from pipeline.steps.dsir import _Scorer

    cls = get_step_class("dsir_v1")
    shards = _stage_shards(corpus["docs"], tmp_path / "stage")
    step = cls(cls.Options(target=[str(corpus["target"])], num_documents=25, seed=1,
                           length_features=256))
    kept = _run_global(step, shards, tmp_path / "work")
    assert len(kept) == 25 and Counter(d.source for d in kept)["wiki"] >= 20
    log_ratio = np.load(tmp_path / "work" / "log_ratio.npy")
    feats = FeatureOptions()
    doc = kept[0]
    b = feature_buckets(doc.text, feats)
    assert doc.metadata["dsir_log_weight"] == pytest.approx(float(log_ratio[b].mean()) * 256)
    text = "The river flows north through the valley, past the old mill and the church."
    tripled = " ".join([text] * 3)
    fixed, summed = _Scorer(log_ratio, feats, 0, 256), _Scorer(log_ratio, feats, 0)
    one, three = (fixed.score(Document(str(i), t))[0] for i, t in enumerate([text, tripled]))
    assert three == pytest.approx(one, rel=0.05)
    s1, s3 = (summed.score(Document(str(i), t))[0] for i, t in enumerate([text, tripled]))
    assert s3 == pytest.approx(3 * s1, rel=0.05)


def test_dsir_step_on_ray_decides_as_in_process(corpus: dict, ray_local,
                                                tmp_path: Path) -> None:
    """The scorer travels once per call to Ray workers; the decisions and the scores are
    those of the in-process run."""
    from pipeline.core.registry import get_step_class

    cls = get_step_class("dsir_v1")
    shards = _stage_shards(corpus["docs"], tmp_path / "stage")
    options = cls.Options(target=[str(corpus["target"])], num_documents=25, seed=3)
    local = _run_global(cls(options), shards, tmp_path / "local")
    on_ray = _run_global(cls(options), shards, tmp_path / "ray", executor=RayExecutor())
    assert [(d.id, d.metadata["dsir_log_weight"]) for d in on_ray] == \
        [(d.id, d.metadata["dsir_log_weight"]) for d in local]
    assert (tmp_path / "ray" / "decision.json").read_bytes() == \
        (tmp_path / "local" / "decision.json").read_bytes()


def test_a_failing_shard_fails_prepare_with_its_own_error(corpus: dict,
                                                         tmp_path: Path) -> None:
    """Every shard is tried; the error names the one that failed and its own exception."""
    from pipeline.core.registry import get_step_class

    cls = get_step_class("dsir_v1")
    shards = _stage_shards(corpus["docs"], tmp_path / "stage")
    shards.insert(1, StageShard("gone", (str(tmp_path / "missing.parquet"),)))
    step = cls(cls.Options(target=[str(corpus["target"])], num_documents=5))
    with pytest.raises(TaskFailures, match="gone: FileNotFoundError") as info:
        step.prepare(shards, str(tmp_path / "work"), LocalExecutor())
    assert [o.name for o in info.value.failures] == ["gone"]
    assert isinstance(info.value.__cause__, FileNotFoundError)
    done = sorted(p.name for p in (tmp_path / "work" / "raw_counts").glob("*.npz"))
    assert done == ["s0.npz", "s1.npz", "s2.npz"]
    assert not (tmp_path / "work" / "decision.json").exists()


def test_dsir_fit_command_counts_in_process(corpus: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """``pipeline dsir fit --local`` writes the counts of its files, with no Ray."""
    from pipeline.cli import main
    from pipeline.text.corpus import iter_texts

    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in corpus["docs"]))
    out = tmp_path / "dsir.npz"
    assert main(["dsir", "fit", "--local", "--target", str(corpus["target"]), "--raw", str(raw),
                 "--output", str(out), "--buckets", "300"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target_docs"] == 100 and report["raw_docs"] == len(corpus["docs"])
    model = DSIRModel.load(out)
    opts = FeatureOptions(buckets=300)
    assert np.array_equal(model.target_counts,
                          count_features(iter_texts(str(corpus["target"])), opts)[0])
    assert np.array_equal(model.raw_counts, count_features(iter_texts(str(raw)), opts)[0])


def test_dsir_options_are_validated() -> None:
    from pipeline.core.config import JobConfigError, parse_steps

    with pytest.raises(JobConfigError, match="exactly one of target"):
        parse_steps([{"dsir_v1": {"num_documents": 5}}])
    with pytest.raises(JobConfigError, match="not both"):
        parse_steps([{"dsir_v1": {"target": ["t"], "num_documents": 5, "fraction": 0.1}}])


@pytest.fixture(scope="module")
def models(corpus: dict) -> dict:
    from pipeline.text.kenlm.model import train_lm
    from pipeline.text.quality import TrainOptions, train_classifier

    tmp = corpus["tmp"]
    neg = tmp / "neg.jsonl"
    neg.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus["texts"](
        corpus["shared"] / "noisy" / "spamassassin.jsonl.gz", 150, "raw", stride=31)))
    ft = tmp / "q.bin"
    train_classifier([str(corpus["target"])], [str(neg)], ft,
                     TrainOptions(epoch=10, dim=16, bucket=20_000), show_progress=False)
    lm = tmp / "lm.arpa"
    train_lm([str(corpus["target"])], lm, order=3, build_binary=None, show_progress=False)
    return {"fasttext": ft, "kenlm": lm}


def test_fasttext_top_fraction_is_job_wide(corpus: dict, models: dict,
                                           tmp_path: Path) -> None:
    from pipeline.core.registry import get_step_class
    from pipeline.text.quality import QualityClassifier

    cls = get_step_class("fasttext_quality_top_v1")
    shards = _stage_shards(corpus["docs"], tmp_path / "stage")
    step = cls(cls.Options(model=str(models["fasttext"]), fraction=0.3))
    kept = _run_global(step, shards, tmp_path / "work")
    clf = QualityClassifier.load(models["fasttext"])
    scores = sorted((clf.probability(d.text) or -1.0 for d in corpus["docs"]), reverse=True)
    k = math.ceil(0.3 * len(corpus["docs"]))
    assert len(kept) == k
    assert min(d.metadata["quality_score"] for d in kept) == pytest.approx(scores[k - 1])


def test_crawl_job_with_all_three_filters(corpus: dict, models: dict, ray_local,
                                          tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from pipeline.execution.runner import run_job

    inputs = []
    for s in range(2):
        path = tmp_path / f"in{s}.jsonl"
        path.write_text("".join(json.dumps({"id": d.id, "text": d.text, "source": d.source})
                                + "\n" for d in corpus["docs"][s::2]))
        inputs.append(str(path))
    job = {
        "job": "crawl", "name": "model-filters-test", "inputs": inputs,
        "output": str(tmp_path / "out"),
        "steps": [
            {"kenlm_v1": {"model": str(models["kenlm"])}},
            {"fasttext_quality_v1": {"model": str(models["fasttext"]), "threshold": None}},
            {"dsir_v1": {"target": [str(corpus["target"])], "num_documents": 20}},
        ],
        "write": {"keep_removed": True, "checkpoint_docs": 10},
    }
    stats = run_job(job)
    assert not stats["failed_shards"]
    table = [r for p in sorted((tmp_path / "out" / "data").glob("*.parquet"))
             for r in pq.read_table(p).to_pylist()]
    assert len(table) == 20
    assert all(r["dsir_log_weight"] is not None and r["bucket"] == "all" for r in table)
    assert all(r["perplexity"] > 0 and 0 <= r["quality_score"] <= 1 for r in table)
    wiki = [r for r in table if r["id"].startswith("wiki")]
    assert len(wiki) >= 15


def test_train_filters_job_trains_all_three(corpus: dict, models: dict, ray_local,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """``pipeline run`` of a train_filters job: DSIR counts on Ray."""
    import yaml

    from pipeline.cli import main
    from pipeline.core.config import JobConfigError
    from pipeline.jobkinds.train_filters import run_from_file

    target, neg = str(corpus["target"]), str(corpus["tmp"] / "neg.jsonl")
    job = {"job": "train_filters", "output": str(tmp_path / "models"),
           "kenlm": {"order": 3, "input": [target], "build_binary": None,
                     "cutoffs_from": [neg]},
           "fasttext": {"positive": [target], "negative": [neg], "dim": 8, "bucket": 10_000},
           "dsir": {"target": [target], "raw": [neg], "buckets": 500}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["run", str(path)]) == 0
    printed = capsys.readouterr().out  # progress lines, then the summary
    summary = json.loads(printed[printed.index("\n{\n") + 1:])
    out = tmp_path / "models"
    for name in ("kenlm.arpa", "quality.bin", "dsir.npz"):
        assert (out / name).is_file() and (out / f"{name}.meta.json").is_file()
    cut = (out / "kenlm.cutoff.csv").read_text().splitlines()
    assert cut[0] == ",en" and len(cut) == 102
    assert summary["kenlm"]["cutoffs"]["p30"] <= summary["kenlm"]["cutoffs"]["p60"]
    # held out: 10 positive, 15 negative. The model reaches precision 0.89 (tp 8, fp 1) and
    # recall 0.8; labelling everything positive has recall 1 but precision 10/25 = 0.4.
    holdout = summary["fasttext"]["holdout"]
    assert holdout["recall"] > 0.5 and holdout["precision"] > 0.6, holdout
    assert summary["dsir"]["buckets"] == 500
    assert json.loads((out / "summary.json").read_text())["job"] == "train_filters"
    path.write_text(yaml.safe_dump({**job, "fasttext": {**job["fasttext"], "epochs": 3}}))
    with pytest.raises(JobConfigError, match="fasttext.epochs: unknown key"):
        run_from_file(str(path))
