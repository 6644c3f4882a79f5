"""fastText quality classifier: high-quality target text versus raw web text.

:class:`QualityClassifier` trains a supervised fastText model (word n-grams) on documents
labelled ``hq`` (the target, e.g. Wikipedia) and ``lq`` (raw crawl text), reports
precision and recall on a held-out split, and predicts ``(label, probability)`` for a
document. Text is normalised as CCNet does (:mod:`pipeline.text.normalize`) and joined into
one line, identically at training and prediction time; the options are recorded in the
model's ``.meta.json`` sidecar and checked when the model is loaded.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_path
from pipeline.text.model_meta import ModelMismatchError, check_meta, write_meta
from pipeline.text.normalize import NormalizeOptions, normalize_line

KIND = "fasttext_quality"
FORMAT_VERSION = 1
POSITIVE = "hq"
NEGATIVE = "lq"
_PREFIX = "__label__"


def fasttext_line(text: str, norm: NormalizeOptions | None = None, max_tokens: int = 2000) -> str:
    """Return ``text`` as one normalised fastText input line (no newline), at most ``max_tokens`` tokens."""
    toks: list[str] = []
    for raw in text.splitlines():
        toks.extend(normalize_line(raw, norm).split())
        if len(toks) >= max_tokens:
            break
    return " ".join(toks[:max_tokens])


@dataclass
class TrainOptions:
    """Options of :func:`train_classifier` (fastText's names where they are fastText's)."""

    epoch: int = 5
    lr: float = 0.2
    word_ngrams: int = 2
    dim: int = 32
    min_count: int = 2
    bucket: int = 200_000
    holdout: float = 0.1
    balance: bool = True
    max_tokens: int = 2000
    seed: int = 0
    threads: int = 1
    normalization: NormalizeOptions = field(default_factory=NormalizeOptions)


@dataclass
class EvalResult:
    """Held-out figures of a classifier at a probability threshold for ``hq``."""

    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        """Share of documents predicted ``hq`` that are ``hq`` (NaN if none predicted)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        """Share of ``hq`` documents predicted ``hq`` (NaN if there are none)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Return the counts with precision and recall, JSON-ready."""
        return {"threshold": self.threshold, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "tn": self.tn, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4)}


_FASTTEXT_MAGIC = 793712314


def check_fasttext_file(path: str) -> None:
    """Raise ModelMismatchError unless ``path`` is a whole fastText ``.bin`` file.

    Parses the header, dictionary and matrix shapes and compares the size they imply with
    the file's size: fastText's own loader does not notice a truncated file and can spend
    minutes reading past its end. Quantized (``.ftz``) models are only checked up to the
    dictionary.
    """
    import struct

    with open(path, "rb") as f:
        data = f.read()
    size = len(data)

    def fail(why: str) -> ModelMismatchError:
        return ModelMismatchError(f"fastText model {path!r} is corrupt or truncated: {why}")

    try:
        magic, _version = struct.unpack_from("<ii", data, 0)
        if magic != _FASTTEXT_MAGIC:
            raise fail("not a fastText model (bad magic number)")
        pos = 8 + 12 * 4 + 8  # 12 int32 arguments and one double
        nsize, _nwords, _nlabels, _ntokens, prune_size = struct.unpack_from("<iiiqq", data, pos)
        pos += 4 * 3 + 8 * 2
        if nsize < 0 or nsize > size:
            raise fail(f"impossible dictionary size {nsize}")
        for _ in range(nsize):
            end = data.index(b"\0", pos)
            pos = end + 1 + 8 + 1  # word, count int64, entry type int8
        pos += 8 * max(prune_size, 0)
        quant_input = data[pos]
        pos += 1
        if quant_input:
            return
        rows, cols = struct.unpack_from("<qq", data, pos)
        pos += 16 + 4 * rows * cols
        quant_output = data[pos]
        pos += 1
        if quant_output:
            return
        rows, cols = struct.unpack_from("<qq", data, pos)
        pos += 16 + 4 * rows * cols
    except (struct.error, ValueError, IndexError) as e:
        raise fail(f"ends inside its header ({e})") from None
    if pos != size:
        raise fail(f"its header implies {pos} bytes, the file has {size}")


class QualityClassifier:
    """A loaded fastText quality model; use :meth:`load`, then :meth:`predict`."""

    def __init__(self, model: Any, normalization: NormalizeOptions, max_tokens: int,
                 meta: dict[str, Any] | None = None) -> None:
        self._model = model
        self.normalization = normalization
        self.max_tokens = max_tokens
        self.meta = meta or {}
        self.labels = [lab.removeprefix(_PREFIX) for lab in model.get_labels()]

    @classmethod
    def load(cls, path: str | os.PathLike, normalization: NormalizeOptions | None = None,
             require_meta: bool = True) -> QualityClassifier:
        """Load a model written by :func:`train_classifier`.

        ``normalization`` (default: CCNet's) must equal the one the model was trained
        with. Raises :class:`ModelMismatchError` for a missing, corrupt or mismatching
        model (with ``require_meta=False`` a model without sidecar is accepted as is).
        """
        import fasttext

        norm = normalization or NormalizeOptions()
        path = str(path)
        if not os.path.isfile(path):
            raise ModelMismatchError(f"fastText model {path!r} does not exist")
        meta: dict[str, Any] = {}
        if require_meta or os.path.isfile(path + ".meta.json"):
            meta = check_meta(path, KIND, FORMAT_VERSION, norm)
        check_fasttext_file(path)
        try:
            model = fasttext.load_model(path)
        except (ValueError, RuntimeError, MemoryError) as e:
            raise ModelMismatchError(f"fastText model {path!r} cannot be loaded: {e}") from None
        max_tokens = int((meta.get("options") or {}).get("max_tokens", 2000))
        clf = cls(model, norm, max_tokens, meta)
        if require_meta and POSITIVE not in clf.labels:
            raise ModelMismatchError(f"fastText model {path!r} has no label {POSITIVE!r}")
        return clf

    def _predict_line(self, line: str, k: int = -1) -> list[tuple[float, str]]:
        # fasttext 0.9.3's FastText.predict() wraps the probabilities with
        # np.array(probs, copy=False), which NumPy 2 refuses ("Unable to avoid copy while
        # creating an array as requested"). The C++ binding under it, model.f.predict,
        # returns plain (probability, label) pairs, so we call it directly. Like
        # FastText.predict, it needs exactly one line ending in "\n".
        return self._model.f.predict(line + "\n", k, 0.0, "strict")

    def predict(self, text: str) -> tuple[str, float]:
        """Return the most probable label (``"hq"`` / ``"lq"``) of ``text`` and its probability.

        A text with no tokens after normalisation gets the label ``""`` and probability 0.
        """
        line = fasttext_line(text, self.normalization, self.max_tokens)
        if not line:
            return "", 0.0
        pairs = self._predict_line(line, 1)
        if not pairs:
            return "", 0.0
        prob, label = pairs[0]
        return label.removeprefix(_PREFIX), min(1.0, max(0.0, float(prob)))

    def probability(self, text: str, label: str = POSITIVE) -> float | None:
        """Return P(``label`` | text), or ``None`` when the text has no tokens to score."""
        line = fasttext_line(text, self.normalization, self.max_tokens)
        if not line:
            return None
        for prob, lab in self._predict_line(line, -1):
            if lab.removeprefix(_PREFIX) == label:
                return min(1.0, max(0.0, float(prob)))
        return 0.0


def evaluate(clf: QualityClassifier, texts: list[str], labels: list[str],
             threshold: float = 0.5) -> EvalResult:
    """Return precision/recall counts of ``P(hq) >= threshold`` against true ``labels``."""
    tp = fp = fn = tn = 0
    for text, gold in zip(texts, labels, strict=True):
        p = clf.probability(text)
        pred = p is not None and p >= threshold
        if gold == POSITIVE:
            tp, fn = (tp + 1, fn) if pred else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if pred else (fp, tn + 1)
    return EvalResult(threshold, tp, fp, fn, tn)


def _read_docs(paths: Iterable[str], norm: NormalizeOptions, max_tokens: int,
               progress: Callable[[int], None] | None) -> list[str]:
    from pipeline.text.corpus import iter_corpus

    out = []
    for text in iter_corpus(paths):
        line = fasttext_line(text, norm, max_tokens)
        if line:
            out.append(line)
        if progress is not None:
            progress(1)
    return out


def _fit_and_save(train_path: str, params: dict[str, Any], out_path: str) -> None:
    import fasttext

    fasttext.train_supervised(input=train_path, **params).save_model(out_path)


def _train_in_subprocess(train_path: str, params: dict[str, Any], out_path: str) -> None:
    """Train and save a fastText model in a fresh (spawned) process.

    fastText 0.9.3's supervised training reads heap memory it never initialised: in a
    process whose freed heap holds NaNs (NumPy work before, e.g. estimating a KenLM
    model), it fails with "Encountered NaN" at any learning rate. A fresh process has a
    clean heap, so training there is deterministic.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        pool.submit(_fit_and_save, train_path, params, out_path).result()


def train_classifier(positive: list[str], negative: list[str], output: str | os.PathLike,
                     opts: TrainOptions | None = None, show_progress: bool = True
                     ) -> dict[str, Any]:
    """Train a fastText ``hq``/``lq`` model from the ``positive`` and ``negative`` files.

    Holds out ``opts.holdout`` of each class (seeded), downsamples the larger class of
    the training split when ``opts.balance``, trains, evaluates on the held-out split at
    threshold 0.5, saves ``output`` with its ``.meta.json`` sidecar and a ``.report.md``,
    and returns the report dict (counts, precision, recall, seconds).
    """
    import time

    import fasttext
    from tqdm import tqdm

    from pipeline.text.corpus import describe_files, expand_paths

    o = opts or TrainOptions()
    t0 = time.time()
    pos_files, neg_files = expand_paths(positive), expand_paths(negative)
    bar = tqdm(desc="reading documents", unit="doc", disable=not show_progress)
    pos = _read_docs(pos_files, o.normalization, o.max_tokens, bar.update)
    neg = _read_docs(neg_files, o.normalization, o.max_tokens, bar.update)
    bar.close()
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError(f"need at least 2 non-empty documents per class, got {len(pos)} "
                         f"positive and {len(neg)} negative")
    rng = random.Random(o.seed)
    rng.shuffle(pos)
    rng.shuffle(neg)
    n_hold_pos = max(1, round(len(pos) * o.holdout)) if o.holdout > 0 else 0
    n_hold_neg = max(1, round(len(neg) * o.holdout)) if o.holdout > 0 else 0
    hold = [(t, POSITIVE) for t in pos[:n_hold_pos]] + [(t, NEGATIVE) for t in neg[:n_hold_neg]]
    train_pos, train_neg = pos[n_hold_pos:], neg[n_hold_neg:]
    if o.balance:
        n = min(len(train_pos), len(train_neg))
        train_pos, train_neg = train_pos[:n], train_neg[:n]
    train = [(t, POSITIVE) for t in train_pos] + [(t, NEGATIVE) for t in train_neg]
    rng.shuffle(train)

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False,
                                     dir=output.parent) as f:
        for text, label in train:
            f.write(f"{_PREFIX}{label} {text}\n")
        train_path = f.name
    try:
        if show_progress:
            print(f"training fastText on {len(train_pos)} hq + {len(train_neg)} lq documents "
                  f"({o.epoch} epochs, word n-grams {o.word_ngrams})", flush=True)
        lr = o.lr
        params = {"epoch": o.epoch, "wordNgrams": o.word_ngrams, "dim": o.dim,
                  "minCount": o.min_count, "bucket": o.bucket, "thread": o.threads,
                  "seed": o.seed, "loss": "softmax", "verbose": 2 if show_progress else 0}
        with atomic_path(output) as tmp_model:
            for attempt in range(4):
                try:
                    _train_in_subprocess(train_path, {**params, "lr": lr}, str(tmp_model))
                    break
                except RuntimeError as e:
                    # fastText diverges ("Encountered NaN") when the learning rate is too
                    # high for the data; halve it and train again rather than fail the job
                    if "NaN" not in str(e) or attempt == 3:
                        raise
                    lr /= 2
                    print(f"fastText diverged; retrying with lr={lr}", flush=True)
    finally:
        os.unlink(train_path)
    model = fasttext.load_model(str(output))

    clf = QualityClassifier(model, o.normalization, o.max_tokens)
    result = evaluate(clf, [t for t, _ in hold], [lab for _, lab in hold]) if hold else None
    options = {k: v for k, v in o.__dict__.items() if k != "normalization"}
    options["lr_used"] = lr
    report = {
        "positive_docs": len(pos), "negative_docs": len(neg),
        "train_positive": len(train_pos), "train_negative": len(train_neg),
        "holdout_positive": n_hold_pos, "holdout_negative": n_hold_neg,
        "holdout": result.to_dict() if result else None,
        "seconds": round(time.time() - t0, 1),
    }
    write_meta(output, KIND, FORMAT_VERSION, o.normalization, options,
               describe_files(pos_files) + describe_files(neg_files), report)
    meta = {"positive_files": pos_files, "negative_files": neg_files}
    lines = [f"# fastText quality classifier {output.name}", "",
             f"- positive files: {', '.join(pos_files)}",
             f"- negative files: {', '.join(neg_files)}",
             f"- documents: {len(pos)} hq, {len(neg)} lq; trained on {len(train_pos)} hq + "
             f"{len(train_neg)} lq; held out {n_hold_pos} hq + {n_hold_neg} lq",
             f"- options: {options}"]
    if result:
        lines.append(f"- held-out at P(hq) >= 0.5: precision {result.precision:.4f}, "
                     f"recall {result.recall:.4f} (tp {result.tp}, fp {result.fp}, "
                     f"fn {result.fn}, tn {result.tn})")
    output.with_name(output.name + ".report.md").write_text("\n".join(lines) + "\n",
                                                            encoding="utf-8")
    return {**report, **meta, "model": str(output)}
