"""The alt-profanity-check model as pipeline.text.toxicity applies it, on real text."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import shutil
from itertools import islice
from pathlib import Path

import pytest

from pipeline.text.model_meta import ModelMismatchError
from pipeline.text.toxicity import ProfanityCheckModel, line_scores, package_data_dir


@pytest.fixture(scope="module")
def model() -> ProfanityCheckModel:
    return ProfanityCheckModel.load()


def _bodies(shared_data: Path, n: int) -> list[str]:
    """The bodies (after the header block) of every 12th SpamAssassin message, ``n`` of them."""
    with gzip.open(shared_data / "noisy" / "spamassassin.jsonl.gz", "rt", encoding="utf-8") as f:
        raws = [json.loads(line)["raw"] for line in islice(f, 0, n * 12, 12)]
    return [r.split("\n\n", 1)[-1] for r in raws]


def _articles(shared_data: Path, n: int) -> list[str]:
    with gzip.open(shared_data / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in islice(f, n)]


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> list[str]:
    """Real documents and their lines: 60 emails, 40 Wikipedia articles, blank strings."""
    docs = _bodies(shared_data, 60) + _articles(shared_data, 40)
    lines = [ln for d in docs for ln in d.split("\n") if ln.strip()]
    return docs + lines[:4000] + ["", "   \n", "a", "你好世界"]


def test_scores_equal_the_packages_predict_prob(model: ProfanityCheckModel,
                                                 texts: list[str]) -> None:
    from profanity_check import predict_prob

    mine = model.scores(texts)
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    assert [i for i, s in enumerate(mine) if s is None] == blank
    scored = [i for i in range(len(texts)) if i not in blank]
    ref = predict_prob([texts[i] for i in scored])
    diff = max(abs(mine[i] - float(r)) for i, r in zip(scored, ref, strict=True))
    assert diff < 1e-9
    assert min(mine[i] for i in scored) < 0.05 and max(mine[i] for i in scored) > 0.95


def test_scores_do_not_depend_on_the_batch(model: ProfanityCheckModel, texts: list[str]) -> None:
    sample = texts[::37]
    assert model.scores(sample) == [model.scores([t])[0] for t in sample]


def test_line_scores_split_at_newlines(model: ProfanityCheckModel, texts: list[str]) -> None:
    doc = texts[0]
    lines, scores = line_scores(model, doc)
    assert lines == doc.split("\n")
    assert scores == model.scores(lines)


def test_lines_with_ldnoobw_words_score_above_wikipedia_lines(
        model: ProfanityCheckModel, shared_data: Path) -> None:
    """Lines of emails holding an LDNOOBW entry against Wikipedia lines holding none: the
    model ranks the first above the second most of the time (ROC AUC). It is a profanity
    label, not a toxicity label: 'sex' in a news line counts as positive."""
    words = set(json.loads((shared_data / "lists" / "ldnoobw" / "en.json").read_text()))
    def listed(line: str) -> bool:
        return bool(set(re.findall(r"\w+", line.lower())) & words)
    emails = [ln for b in _bodies(shared_data, 500) for ln in b.split("\n") if len(ln) > 20]
    pos = [ln for ln in emails if listed(ln)]
    wiki = [ln for a in _articles(shared_data, 60) for ln in a.split("\n") if len(ln) > 20]
    neg = [ln for ln in wiki if not listed(ln)][:2000]
    assert len(pos) >= 40 and len(neg) >= 1000
    p, n = model.scores(pos), model.scores(neg)
    wins = sum((a > b) + 0.5 * (a == b) for a in p for b in n)
    auc = wins / (len(p) * len(n))
    assert auc > 0.8, auc


def _copy_pickles(dst: Path) -> Path:
    dst.mkdir()
    for name in ("vectorizer.joblib", "model.joblib"):
        shutil.copy(Path(package_data_dir()) / name, dst / name)
    return dst


def test_a_pickle_of_another_scikit_learn_is_refused(tmp_path: Path) -> None:
    import sklearn

    folder = _copy_pickles(tmp_path / "data")
    data = (folder / "vectorizer.joblib").read_bytes()
    # pickle the loaded vectorizer again, claiming another scikit-learn version
    import joblib

    vec = joblib.load(folder / "vectorizer.joblib")
    raw = pickle.dumps(vec)
    version = sklearn.__version__.encode()
    assert raw.count(version) == 1
    (folder / "vectorizer.joblib").write_bytes(raw.replace(version, b"0" * len(version)))
    with pytest.raises(ModelMismatchError, match="scikit-learn"):
        ProfanityCheckModel.load(str(folder))
    (folder / "vectorizer.joblib").write_bytes(data)
    assert ProfanityCheckModel.load(str(folder)).scores(["hello"])[0] is not None


def test_a_model_of_another_form_is_refused(tmp_path: Path) -> None:
    import joblib

    folder = _copy_pickles(tmp_path / "data")
    vec = joblib.load(folder / "vectorizer.joblib")
    vec.set_params(sublinear_tf=True)
    joblib.dump(vec, folder / "vectorizer.joblib")
    with pytest.raises(ModelMismatchError, match="sublinear_tf"):
        ProfanityCheckModel.load(str(folder))


def test_missing_pickles_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelMismatchError, match="vectorizer.joblib does not exist"):
        ProfanityCheckModel.load(str(tmp_path))
