"""toxicity_v1 on real documents: document and line modes, options, the fastText path."""

from __future__ import annotations

import copy
import gzip
import json
import pickle
import random
from itertools import islice
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.core.config import JobConfigError, parse_steps
from pipeline.core.document import Document
from pipeline.core.step import StepCheckError, StepContext, StepStats
from pipeline.steps.toxicity import Toxicity, ToxicityOptions
from pipeline.text.model_meta import ModelMismatchError
from pipeline.text.toxicity import ProfanityCheckModel


def _emails(shared_data: Path, n: int, stride: int, start: int = 0) -> list[dict]:
    with gzip.open(shared_data / "noisy" / "spamassassin.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in islice(f, start, start + n * stride, stride)]


def _body(raw: str) -> str:
    return raw.split("\n\n", 1)[-1]


@pytest.fixture(scope="module")
def docs(shared_data: Path) -> list[Document]:
    """120 extracted webmix pages and 150 SpamAssassin message bodies (spam and ham)."""
    from pipeline.io.readers import ReadOptions, read_shard
    from pipeline.steps.extract import Extract

    path = str(shared_data / "webmix" / "webmix-00001.warc.gz")
    html = list(islice(read_shard(path, "warc", 0, 1, ReadOptions(), StepStats()), 120))
    step = Extract()
    step.setup()
    pages = list(step.run(html, StepContext(StepStats())))
    mails = [Document(m["id"], _body(m["raw"])) for m in _emails(shared_data, 150, 40)]
    return pages + mails


@pytest.fixture(scope="module")
def model() -> ProfanityCheckModel:
    return ProfanityCheckModel.load()


def _run(options: dict, docs: list[Document]) -> tuple[list[Document], dict, StepStats]:
    step = Toxicity(ToxicityOptions(**options))
    step.check()
    step.setup()
    removed: dict[str, tuple[Document, str]] = {}
    ctx = StepContext(StepStats(), lambda d, s, r: removed.__setitem__(d.id, (d, r)))
    out = list(step.run([copy.deepcopy(d) for d in docs], ctx))
    return out, removed, ctx.stats


def test_document_mode_scores_the_text_and_drops_at_the_threshold(
        docs: list[Document], model: ProfanityCheckModel) -> None:
    out, removed, stats = _run({}, docs)
    assert len(out) + len(removed) == len(docs)
    expected = {d.id: model.scores([d.text])[0] for d in docs}
    for d in out:
        assert d.metadata["toxicity_score"] == expected[d.id] and expected[d.id] < 0.5
        assert set(d.metadata) == {"toxicity_score"}
    for d, reason in removed.values():
        assert reason == "toxic" and d.metadata["toxicity_score"] >= 0.5
    assert 0 < len(removed) < len(docs) // 2
    assert Toxicity(ToxicityOptions()).metadata_fields.keys() == {"toxicity_score"}


def test_threshold_null_only_annotates(docs: list[Document]) -> None:
    out, removed, _ = _run({"threshold": None}, docs)
    assert not removed and len(out) == len(docs)
    assert all(isinstance(d.metadata["toxicity_score"], float) for d in out if d.text.strip())


def test_line_mode_writes_the_max_and_the_toxic_share(
        docs: list[Document], model: ProfanityCheckModel) -> None:
    out, removed, _ = _run({"mode": "line", "threshold": 0.9}, docs)
    by_id = {d.id: d for d in docs}
    for d in [*out, *(r[0] for r in removed.values())]:
        scores = [s for s in model.scores(by_id[d.id].text.split("\n")) if s is not None]
        assert d.metadata["toxicity_score"] == max(scores)
        assert d.metadata["toxic_line_fraction"] == sum(s >= 0.4 for s in scores) / len(scores)
        assert (d.id in removed) == (max(scores) >= 0.9)
    assert removed and all(r == "toxic" for _, r in removed.values())
    assert any(0 < d.metadata["toxic_line_fraction"] for d in out)


def test_drop_toxic_lines_cuts_exactly_the_lines_over_line_threshold(
        docs: list[Document], model: ProfanityCheckModel) -> None:
    out, removed, stats = _run({"mode": "line", "threshold": None, "drop_toxic_lines": True,
                                "line_threshold": 0.5}, docs)
    by_id = {d.id: d for d in docs}
    cut = 0
    for d in out:
        lines = by_id[d.id].text.split("\n")
        scores = model.scores(lines)
        toxic = [s is not None and s >= 0.5 for s in scores]
        cut += sum(toxic)
        assert d.text == "\n".join(ln for ln, t in zip(lines, toxic, strict=True) if not t)
        # the scores are those of the text before the cut
        assert d.metadata["toxicity_score"] == max(s for s in scores if s is not None)
    assert cut > 0 and stats.counters["toxic_lines_removed"] == cut
    assert all(r == "all_lines_toxic" for _, r in removed.values())


def test_a_document_of_toxic_lines_only_is_dropped(docs: list[Document],
                                                   model: ProfanityCheckModel) -> None:
    lines = [ln for d in docs for ln in d.text.split("\n") if ln.strip()]
    toxic = [ln for ln, s in zip(lines, model.scores(lines), strict=True) if s >= 0.4][:5]
    assert len(toxic) == 5
    doc = Document("all-toxic", "\n".join(toxic) + "\n\n")
    _, removed, _ = _run({"mode": "line", "threshold": None, "drop_toxic_lines": True}, [doc])
    assert removed["all-toxic"][1] == "all_lines_toxic"


def test_max_toxic_line_fraction(docs: list[Document]) -> None:
    annotated, _, _ = _run({"mode": "line", "threshold": None}, docs)
    out, removed, _ = _run({"mode": "line", "threshold": None,
                            "max_toxic_line_fraction": 0.05}, docs)
    over = {d.id for d in annotated if d.metadata["toxic_line_fraction"] > 0.05}
    assert over and set(removed) == over
    assert all(r == "too_many_toxic_lines" for _, r in removed.values())


def test_blank_documents_are_kept_unscored() -> None:
    out, removed, stats = _run({"mode": "line"}, [Document("blank", " \n\n  ")])
    assert not removed and out[0].metadata["toxicity_score"] is None
    assert stats.counters["unscored"] == 1


@pytest.mark.parametrize("options, match", [
    ({"drop_toxic_lines": True}, "needs mode: line"),
    ({"max_toxic_line_fraction": 0.1}, "needs mode: line"),
    ({"label": "nsfw"}, "fastText model"),
    ({"threshold": 1.5}, "less than or equal"),
    ({"mode": "sentence"}, "mode"),
    ({"treshold": 0.5}, "treshold"),
    ({"selection": "sample"}, "needs temperature"),
    ({"selection": "sample", "temperature": 0.1, "threshold": None}, "needs threshold"),
])
def test_bad_options_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ToxicityOptions(**options)


def test_job_validation_names_the_step_and_option() -> None:
    with pytest.raises(JobConfigError, match=r"steps\[0\].*toxicity_v1.*drop_toxic_lines"):
        parse_steps([{"toxicity_v1": {"drop_toxic_lines": True}}])


def test_check_names_a_missing_fasttext_model(tmp_path: Path) -> None:
    step = Toxicity(ToxicityOptions(model=str(tmp_path / "jigsaw.bin")))
    with pytest.raises(StepCheckError, match="jigsaw.bin' does not exist") as e:
        step.check()
    assert e.value.key == "model"


@pytest.fixture(scope="module")
def jigsaw_format_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real fastText model in dolma's Jigsaw format (``__label__toxic`` /
    ``__label__non-toxic``), trained on SpamAssassin spam as the stand-in for 'toxic' and ham
    as 'non-toxic' (the label is a stand-in; the format is what is tested), text as dolma
    feeds it (newlines to spaces). Returns the path and 100 held-out emails of each class."""
    from pipeline.text.quality import _train_in_subprocess

    mails = _emails(shared_data, 1500, 4)
    spam = [m for m in mails if m["label"] == "spam"]
    ham = [m for m in mails if m["label"] == "ham"]
    random.Random(0).shuffle(spam)
    random.Random(1).shuffle(ham)
    held = spam[:100] + ham[:100]
    train = [(m, "toxic") for m in spam[100:400]] + [(m, "non-toxic") for m in ham[100:400]]
    random.Random(2).shuffle(train)
    tmp = tmp_path_factory.mktemp("jigsaw")
    data = tmp / "train.txt"
    data.write_text("".join(f"__label__{lab} {' '.join(_body(m['raw']).split())}\n"
                            for m, lab in train), encoding="utf-8")
    path = tmp / "spam_as_toxic.bin"
    _train_in_subprocess(str(data), {"epoch": 10, "lr": 0.5, "wordNgrams": 2, "dim": 16,
                                     "bucket": 50_000, "minCount": 2, "thread": 1, "seed": 0,
                                     "loss": "softmax", "verbose": 0}, str(path))
    return {"path": path, "held": held}


def test_fasttext_model_in_dolma_format(jigsaw_format_model: dict) -> None:
    import fasttext

    path, held = jigsaw_format_model["path"], jigsaw_format_model["held"]
    docs = [Document(m["id"], _body(m["raw"])) for m in held]
    out, removed, _ = _run({"model": str(path), "label": "__label__toxic", "threshold": None},
                           docs)
    assert not removed
    got = {d.id: d.metadata["toxicity_score"] for d in out}
    # the score is fastText's own P(__label__toxic) of the text with its whitespace as spaces
    ft = fasttext.load_model(str(path))
    for d in docs[::10]:
        line = " ".join(d.text.split())
        if not line.isprintable():
            continue
        probs = dict((lab, p) for p, lab in ft.f.predict(line + "\n", -1, 0.0, "strict"))
        assert got[d.id] == pytest.approx(min(1.0, probs["__label__toxic"]), abs=1e-6)
    # and it separates the held-out classes it was trained on
    correct = sum((got[m["id"]] >= 0.5) == (m["label"] == "spam") for m in held)
    assert correct >= 170, correct


def test_fasttext_model_without_the_label_is_refused(jigsaw_format_model: dict) -> None:
    step = Toxicity(ToxicityOptions(model=str(jigsaw_format_model["path"]), label="nsfw"))
    step.check()
    with pytest.raises(ModelMismatchError, match="not 'nsfw'"):
        step.setup()


def test_pickled_step_reloads_its_model_and_decides_the_same(docs: list[Document]) -> None:
    step = Toxicity(ToxicityOptions(mode="line", drop_toxic_lines=True))
    step.setup()
    clone = pickle.loads(pickle.dumps(step))
    assert clone._model is None
    a, _, _ = _run(step.options.model_dump(), docs[:60])
    clone.setup()
    ctx = StepContext(StepStats())
    b = list(clone.run([copy.deepcopy(d) for d in docs[:60]], ctx))
    assert [(d.id, d.text, d.metadata) for d in a] == [(d.id, d.text, d.metadata) for d in b]


def test_cut_lines_are_recorded_as_change_samples(docs: list[Document]) -> None:
    step = Toxicity(ToxicityOptions(mode="line", threshold=None, drop_toxic_lines=True))
    samples: list = []
    ctx = StepContext(StepStats(), samples=samples)
    originals = {d.id: d.text for d in docs}
    out = {d.id: d for d in step.run([copy.deepcopy(d) for d in docs], ctx)}
    assert samples
    for doc, name, record in samples:
        assert name == "toxicity_v1"
        lines = originals[doc.id].split("\n")
        assert record["lines_total"] == len(lines)
        assert [row[0] for row in record["lines"]] == [ln[:400] for ln in lines[:80]]
        kept = [ln for ln, (_, why) in zip(lines, record["lines"], strict=False) if why is None]
        assert out[doc.id].text.split("\n")[:len(kept)] == kept
        assert any(why and why.startswith("toxicity ") for _, why in record["lines"]) or (
            len(lines) > 80)
