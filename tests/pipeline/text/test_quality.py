"""fastText quality classifier: training command, predict API, model checks, steps."""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

import pytest

from pipeline.core.document import Document
from pipeline.core.step import StepContext, StepStats
from pipeline.text.model_meta import ModelMismatchError, write_meta
from pipeline.text.normalize import NormalizeOptions
from pipeline.text.quality import FORMAT_VERSION, KIND, QualityClassifier, fasttext_line


def _jsonl_subset(src: Path, dst: Path, n: int, stride: int = 1, field: str = "text") -> None:
    """Copy every ``stride``-th record of ``src`` (``n`` of them) to ``dst`` as ``text``."""
    with gzip.open(src, "rt", encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= n * stride:
                break
            if i % stride == 0:
                out.write(json.dumps({"text": json.loads(line)[field]}) + "\n")


@pytest.fixture(scope="module")
def trained(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train a small classifier: 250 Wikipedia articles vs 250 SpamAssassin emails (ham and spam)."""
    tmp = tmp_path_factory.mktemp("quality")
    pos, neg = tmp / "pos.jsonl", tmp / "neg.jsonl"
    _jsonl_subset(shared_data / "reference" / "wiki_ref.jsonl.gz", pos, 250)
    _jsonl_subset(shared_data / "noisy" / "spamassassin.jsonl.gz", neg, 250, stride=24,
                  field="raw")
    from pipeline.cli import classifier as quality_cli

    parser = argparse.ArgumentParser()
    quality_cli.register(parser.add_subparsers())
    model = tmp / "q.bin"
    args = parser.parse_args(["classifier", "train", "--positive", str(pos), "--negative",
                              str(neg), "--output", str(model), "--epoch", "10", "--dim", "16",
                              "--bucket", "50000", "--holdout", "0.2"])
    rc = args.func(args)
    return {"rc": rc, "model": model, "tmp": tmp, "shared": shared_data}


def test_train_command_writes_model_meta_report(trained: dict) -> None:
    assert trained["rc"] == 0
    model: Path = trained["model"]
    meta = json.loads(model.with_name("q.bin.meta.json").read_text())
    assert meta["kind"] == KIND and meta["format_version"] == FORMAT_VERSION
    assert meta["normalization"] == NormalizeOptions().model_dump()
    assert len(meta["training_files"]) == 2 and all(len(f["sha256"]) == 64
                                                    for f in meta["training_files"])
    hold = meta["report"]["holdout"]
    assert hold["tp"] + hold["fn"] == 50 and hold["fp"] + hold["tn"] == 50
    # Wikipedia vs email is an easy split: the held-out figures must show it.
    assert hold["precision"] >= 0.85 and hold["recall"] >= 0.85
    assert "precision" in model.with_name("q.bin.report.md").read_text()
    # the model and its sidecar were written under temporary names, renamed when whole
    assert not [p.name for p in model.parent.iterdir() if ".tmp-" in p.name]


def test_predict_labels_held_out_texts(trained: dict) -> None:
    clf = QualityClassifier.load(trained["model"])
    with gzip.open(trained["shared"] / "eval" / "wiki_val.jsonl.gz", "rt") as f:
        wiki = [json.loads(next(f))["text"] for _ in range(20)]
    with gzip.open(trained["shared"] / "noisy" / "spamassassin.jsonl.gz", "rt") as f:
        spam = [json.loads(line)["raw"] for i, line in enumerate(f) if i % 300 == 7]
    assert len(spam) == 21
    wiki_hits = sum(clf.predict(t)[0] == "hq" for t in wiki)
    spam_hits = sum(clf.predict(t)[0] == "lq" for t in spam)
    assert wiki_hits >= 17 and spam_hits >= 17
    label, prob = clf.predict(wiki[0])
    assert isinstance(label, str) and 0.5 <= prob <= 1.0
    assert clf.probability(wiki[0]) == pytest.approx(prob)
    assert clf.probability(wiki[0], "lq") == pytest.approx(1 - prob, abs=1e-3)


def test_empty_and_other_script_texts_do_not_crash(trained: dict) -> None:
    clf = QualityClassifier.load(trained["model"])
    assert clf.predict("") == ("", 0.0)
    assert clf.predict(" \n\t \n") == ("", 0.0)
    assert clf.probability("") is None
    label, prob = clf.predict("Все люди рождаются свободными и равными в своем достоинстве.")
    assert label in ("hq", "lq") and 0.0 <= prob <= 1.0
    # one line for fastText: newlines never reach it (fastText would split the input there)
    assert "\n" not in fasttext_line("a\nb\r\nc")


def test_model_checks_refuse_mismatch_missing_and_corrupt(trained: dict) -> None:
    model: Path = trained["model"]
    with pytest.raises(ModelMismatchError, match="normalisation differs.*lower"):
        QualityClassifier.load(model, NormalizeOptions(lower=False))
    with pytest.raises(ModelMismatchError, match="does not exist"):
        QualityClassifier.load(trained["tmp"] / "missing.bin")
    bare = trained["tmp"] / "bare.bin"
    shutil.copy(model, bare)
    with pytest.raises(ModelMismatchError, match="no sidecar"):
        QualityClassifier.load(bare)
    assert QualityClassifier.load(bare, require_meta=False).predict("the city")[0] in ("hq", "lq")
    corrupt = trained["tmp"] / "corrupt.bin"
    corrupt.write_bytes(model.read_bytes()[:4096])
    write_meta(corrupt, KIND, FORMAT_VERSION, NormalizeOptions(), {}, [])
    with pytest.raises(ModelMismatchError, match="truncated"):
        QualityClassifier.load(corrupt)
    garbage = trained["tmp"] / "garbage.bin"
    garbage.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelMismatchError, match="bad magic"):
        QualityClassifier.load(garbage, require_meta=False)
    with pytest.raises(ModelMismatchError, match="kind is"):
        write_meta(corrupt, "kenlm", 1, NormalizeOptions(), {}, [])
        QualityClassifier.load(corrupt)


def test_step_filters_and_annotates(trained: dict) -> None:
    from pipeline.core.registry import get_step_class

    cls = get_step_class("fasttext_quality_v1")
    with gzip.open(trained["shared"] / "eval" / "wiki_val.jsonl.gz", "rt") as f:
        wiki = [json.loads(next(f))["text"] for _ in range(5)]
    spam = "FREE MONEY!!! Click here now to claim your prize $$$ http://win.example/ act now"
    docs = [Document(f"w{i}", t) for i, t in enumerate(wiki)] + [
        Document("s", spam), Document("e", "   ")]
    step = cls(cls.Options(model=str(trained["model"]), threshold=0.5))
    step.setup()
    ctx = StepContext(StepStats())
    kept = list(step.run([Document(d.id, d.text) for d in docs], ctx))
    assert {d.id for d in kept} >= {"w0", "w1", "w2"} and "s" not in {d.id for d in kept}
    assert ctx.stats.dropped["no_text"] == 1 and ctx.stats.dropped["low_quality"] >= 1
    assert all(0.5 <= d.metadata["quality_score"] <= 1 for d in kept)

    annotate = cls(cls.Options(model=str(trained["model"]), threshold=None))
    out = list(annotate.run([Document(d.id, d.text) for d in docs], StepContext(StepStats())))
    assert len(out) == len(docs)
    assert out[-1].metadata["quality_score"] is None
    assert out[-2].metadata["quality_score"] < 0.5


def test_step_options_are_validated() -> None:
    from pipeline.core.config import JobConfigError, parse_steps

    with pytest.raises(JobConfigError, match="threshold"):
        parse_steps([{"fasttext_quality_v1": {"model": "m.bin", "threshold": 1.5}}])
    with pytest.raises(JobConfigError, match="unknown key"):
        parse_steps([{"fasttext_quality_v1": {"model": "m.bin", "treshold": 0.5}}])
