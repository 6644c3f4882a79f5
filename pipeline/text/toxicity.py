"""Toxicity scores from trained models: P(toxic | text) for a document or for each of its lines.

Two kinds of model:

* the default, :class:`ProfanityCheckModel`: the linear SVM that the PyPI package
  ``alt-profanity-check`` ships (scikit-learn ``TfidfVectorizer`` over words, then
  ``CalibratedClassifierCV(LinearSVC, method="sigmoid")``, trained on about 200k
  human-labelled comments and tweets: Jigsaw's Toxic Comment Classification data and
  Davidson et al.'s hate-speech-and-offensive-language tweets). Its score is the
  package's ``predict_prob``.
* a user's fastText model in the format of dolma's Jigsaw taggers
  (``__label__toxic``/``__label__non-toxic``, ``__label__nsfw``/``__label__non-nsfw``),
  :class:`FastTextToxicityModel`, loaded and applied through
  :class:`pipeline.text.quality.QualityClassifier`; the score is P(``label``).

scikit-learn's ``predict_proba`` costs about 45 ms a call in input validation whatever
the input size, which makes one call per document (or per line) 30 times slower than the
model itself. :class:`ProfanityCheckModel` therefore reads the fitted parameters out of the
pickles once (vocabulary, IDF weights, the five cross-validation folds' SVM weights and
sigmoid calibrations) and computes the same probability with NumPy; the tests check it
equals ``profanity_check.predict_prob`` on real text.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any, Protocol

import numpy as np

from pipeline.text.model_meta import ModelMismatchError
from pipeline.text.normalize import NormalizeOptions

PACKAGE = "alt-profanity-check"
MODULE = "profanity_check"
_PREFIX = "__label__"
#: fastText input as dolma's Jigsaw taggers give it: the text itself, not CCNet-normalised
RAW = NormalizeOptions(lower=False, strip_accents=False, digits_to_zero=False, punct="keep")


class ToxicityModel(Protocol):
    """A loaded model: :meth:`scores` gives P(toxic) per text."""

    description: str

    def scores(self, texts: list[str]) -> list[float | None]:
        """Return P(toxic) for each text; ``None`` for a text with nothing to score."""


def package_data_dir() -> str:
    """Return the folder holding ``alt-profanity-check``'s pickles, without importing it.

    (Importing ``profanity_check`` unpickles its model at import time; the step loads it
    once itself.) Raises :class:`ModelMismatchError` when the package is not installed.
    """
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMismatchError(
            f"the default toxicity model needs the {PACKAGE} package: pip install "
            f"'{PACKAGE}==1.9.1' (or set model: to a fastText .bin)")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _unpickle(path: str) -> Any:
    """``joblib.load`` a scikit-learn pickle; ModelMismatchError if sklearn's version differs."""
    import joblib
    from sklearn.exceptions import InconsistentVersionWarning

    if not os.path.isfile(path):
        raise ModelMismatchError(f"{path} does not exist; reinstall the {PACKAGE} package "
                                 f"(pip install --force-reinstall '{PACKAGE}==1.9.1')")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        obj = joblib.load(path)
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            m = w.message
            raise ModelMismatchError(
                f"{path} was pickled by scikit-learn {m.original_sklearn_version}, this is "
                f"{m.current_sklearn_version}: its scores would not be the package's. Install "
                f"scikit-learn=={m.original_sklearn_version} (the {PACKAGE} release of that "
                "number pins it)")
    return obj


class ProfanityCheckModel:
    """``alt-profanity-check``'s calibrated linear SVM, applied with NumPy.

    P(toxic | x) = mean over folds i of ``1 / (1 + exp(a_i * (w_i . x + c_i) + b_i))``, where
    x is the text's L2-normalised TF-IDF vector (word tokens of 2+ characters, lower case,
    English stop words removed), ``w_i``, ``c_i`` the fold's SVM and ``a_i``, ``b_i`` its
    sigmoid calibration: what ``CalibratedClassifierCV.predict_proba`` computes.
    """

    def __init__(self, analyzer: Any, vocabulary: dict[str, int], idf: np.ndarray,
                 weights: np.ndarray, intercepts: np.ndarray, cal_a: np.ndarray,
                 cal_b: np.ndarray, description: str) -> None:
        self._analyzer = analyzer
        self._vocabulary = vocabulary
        self._idf = idf
        self._weights = weights  # (vocabulary, folds)
        self._intercepts, self._a, self._b = intercepts, cal_a, cal_b
        self.description = description

    @classmethod
    def load(cls, data_dir: str | None = None) -> ProfanityCheckModel:
        """Load the package's ``vectorizer.joblib`` and ``model.joblib`` (from ``data_dir``).

        Raises :class:`ModelMismatchError` when the package is missing, its pickles need
        another scikit-learn, or the model is not of the form described above.
        """
        from importlib.metadata import PackageNotFoundError, version

        folder = data_dir or package_data_dir()
        vec = _unpickle(os.path.join(folder, "vectorizer.joblib"))
        clf = _unpickle(os.path.join(folder, "model.joblib"))
        try:
            release = version(PACKAGE)
        except PackageNotFoundError:
            release = "unknown"
        cls._check_form(vec, clf, folder)
        folds = clf.calibrated_classifiers_
        weights = np.stack([f.estimator.coef_[0] for f in folds], axis=1).astype(np.float64)
        intercepts = np.array([f.estimator.intercept_[0] for f in folds], dtype=np.float64)
        cal_a = np.array([f.calibrators[0].a_ for f in folds], dtype=np.float64)
        cal_b = np.array([f.calibrators[0].b_ for f in folds], dtype=np.float64)
        return cls(vec.build_analyzer(), dict(vec.vocabulary_), np.asarray(vec.idf_, np.float64),
                   weights, intercepts, cal_a, cal_b, f"{PACKAGE} {release}")

    @staticmethod
    def _check_form(vec: Any, clf: Any, folder: str) -> None:
        """ModelMismatchError unless the pickles are the model this class computes."""
        p = vec.get_params() if hasattr(vec, "get_params") else {}
        want = {"norm": "l2", "use_idf": True, "sublinear_tf": False, "binary": False,
                "analyzer": "word"}
        wrong = [k for k, v in want.items() if p.get(k) != v]
        folds = getattr(clf, "calibrated_classifiers_", None)
        ok = (not wrong and hasattr(vec, "idf_") and folds
              and list(getattr(clf, "classes_", [])) == [0, 1]
              and all(getattr(f, "method", None) == "sigmoid" and len(f.calibrators) == 1
                      and getattr(f.estimator, "coef_", np.empty(0)).shape == (1, len(vec.idf_))
                      for f in folds))
        if not ok:
            raise ModelMismatchError(
                f"the model in {folder} is not a binary TF-IDF + calibrated linear SVM as "
                f"{PACKAGE} 1.9.1 ships (vectorizer options {wrong or 'ok'}); pin "
                f"'{PACKAGE}==1.9.1'")

    def scores(self, texts: list[str]) -> list[float | None]:
        """Return P(toxic) for each text (``None`` for an empty or blank one).

        A text with no word of the model's vocabulary gets the model's base probability,
        as ``predict_prob`` gives it.
        """
        rows: list[int] = []
        cols: list[int] = []
        scored: list[int] = []
        vocab = self._vocabulary
        for i, text in enumerate(texts):
            if not text or text.isspace():
                continue
            scored.append(i)
            r = len(scored) - 1
            for tok in self._analyzer(text):
                j = vocab.get(tok)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        out: list[float | None] = [None] * len(texts)
        if not scored:
            return out
        n = len(scored)
        r_arr = np.asarray(rows, dtype=np.int64)
        c_arr = np.asarray(cols, dtype=np.int64)
        # term counts per (row, term): unique pairs of the flattened index
        key, counts = np.unique(r_arr * len(self._idf) + c_arr, return_counts=True)
        kr, kc = key // len(self._idf), key % len(self._idf)
        tfidf = counts * self._idf[kc]
        norms = np.sqrt(np.bincount(kr, weights=tfidf * tfidf, minlength=n))
        norms[norms == 0] = 1.0
        values = tfidf / norms[kr]
        decision = np.zeros((n, self._weights.shape[1]))
        np.add.at(decision, kr, values[:, None] * self._weights[kc])
        decision += self._intercepts
        p = np.mean(1.0 / (1.0 + np.exp(self._a * decision + self._b)), axis=1)
        for r, i in enumerate(scored):
            out[i] = float(p[r])
        return out


class FastTextToxicityModel:
    """A fastText classifier with ``__label__toxic``-style labels (dolma's Jigsaw format)."""

    def __init__(self, classifier: Any, label: str, description: str) -> None:
        self._clf = classifier
        self.label = label
        self.description = description

    @classmethod
    def load(cls, path: str, label: str,
             normalization: NormalizeOptions | None = None) -> FastTextToxicityModel:
        """Load ``path`` and check it has ``label`` (``toxic`` or ``__label__toxic``).

        ``normalization`` (default :data:`RAW`, the text as dolma's taggers give it) is
        applied to each text before fastText sees it. A ``.meta.json`` sidecar beside the
        model, if there is one, is checked against it. Raises :class:`ModelMismatchError`
        for a missing, corrupt or label-less model.
        """
        from pipeline.text.quality import QualityClassifier

        clf = QualityClassifier.load(path, normalization or RAW, require_meta=False)
        clf.max_tokens = 1 << 62  # the whole text, as dolma scores it (not the first 2000 tokens)
        name = label.removeprefix(_PREFIX)
        if name not in clf.labels:
            raise ModelMismatchError(
                f"fastText model {path!r} has labels {clf.labels}, not {name!r}; set label: "
                "to the toxic class")
        return cls(clf, name, f"fastText {os.path.basename(path)} P({name})")

    def scores(self, texts: list[str]) -> list[float | None]:
        """Return P(label) for each text (``None`` when it has no token)."""
        # a tab separates words for fastText; the CCNet clean-up would delete it instead
        return [self._clf.probability(t.replace("\t", " "), self.label)
                if t and not t.isspace() else None for t in texts]


def load_model(model: str | None, label: str = "toxic",
               normalization: NormalizeOptions | None = None) -> ToxicityModel:
    """Return the fastText model at ``model`` (scored on ``label``), or the package's when None."""
    if model is None:
        return ProfanityCheckModel.load()
    return FastTextToxicityModel.load(os.path.expanduser(model), label, normalization)


def line_scores(model: ToxicityModel, text: str) -> tuple[list[str], list[float | None]]:
    """Split ``text`` at newlines; return the lines and each one's score (None: blank)."""
    lines = text.split("\n")
    return lines, model.scores(lines)
