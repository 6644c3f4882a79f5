"""Train KenLM models with the NumPy estimator and score documents as CCNet does.

Training (:func:`train_lm`) and scoring (:class:`LanguageModel`) share one tokenisation,
:func:`lm_sentences`: each line (paragraph) of a document is normalised
(:mod:`pipeline.text.normalize`) and split on whitespace into one sentence; the literal
tokens ``<s>``, ``</s>`` and ``<unk>`` are dropped because KenLM gives them special
meanings. A document's perplexity is CCNet's: ``10 ** (-sum(log10 p) / n)`` where the sum
runs over all its lines, each scored with ``<s>``/``</s>``, and ``n`` counts each line's
tokens plus one for ``</s>``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_path
from pipeline.text.kenlm.estimate import SPECIALS, estimate, write_arpa
from pipeline.text.model_meta import ModelMismatchError, check_meta, write_meta
from pipeline.text.normalize import NormalizeOptions, normalized_lines

KIND = "kenlm"
FORMAT_VERSION = 1
_SPECIAL_SET = frozenset(SPECIALS)


def lm_sentences(text: str, norm: NormalizeOptions | None = None) -> list[list[str]]:
    """Return the token lists KenLM sees for ``text``: one per non-empty normalised line."""
    out = []
    for line in normalized_lines(text, norm):
        toks = [t for t in line.split() if t not in _SPECIAL_SET]
        if toks:
            out.append(toks)
    return out


def _corpus_sentences(files: list[str], norm: NormalizeOptions, bar: Any) -> Iterator[list[str]]:
    from pipeline.text.corpus import iter_texts

    for path in files:
        for text in iter_texts(path):
            yield from lm_sentences(text, norm)
            bar.update(1)


def train_lm(inputs: Iterable[str], output: str | os.PathLike, order: int = 5,
             normalization: NormalizeOptions | None = None, discount_fallback: bool = False,
             build_binary: str | None = "auto", show_progress: bool = True) -> dict[str, Any]:
    """Estimate a modified Kneser-Ney model of ``order`` from ``inputs`` and write it.

    ``inputs`` are files or globs (see :mod:`pipeline.text.corpus`); ``output`` the ARPA
    file. With ``build_binary="auto"`` a KenLM binary ``OUTPUT.binary`` (probing) is also
    built when ``build_binary`` is on PATH; a path names the program; ``None`` skips it.
    Each model file gets a ``.meta.json`` sidecar; a ``OUTPUT.report.md`` summarises.
    Returns the report dict.
    """
    from tqdm import tqdm

    from pipeline.text.corpus import describe_files, expand_paths

    norm = normalization or NormalizeOptions()
    t0 = time.time()
    files = expand_paths(list(inputs))
    bar = tqdm(desc="reading and counting", unit="doc", disable=not show_progress)
    est = estimate(_corpus_sentences(files, norm, bar), order, discount_fallback)
    bar.close()
    t_est = time.time() - t0
    output = Path(output)
    total = sum(o.size for o in est.orders)
    with tqdm(total=total, desc="writing ARPA", unit="ngram", disable=not show_progress) as wb:
        with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as f:
            write_arpa(f, est.orders, est.tokens, est.words, progress=wb.update)
    summary = est.summary()
    report: dict[str, Any] = {**summary, "estimate_seconds": round(t_est, 1),
                              "seconds": round(time.time() - t0, 1)}
    options = {"order": order, "discount_fallback": discount_fallback,
               "tokenization": "ccnet-normalised lines, whitespace tokens"}
    described = describe_files(files)
    write_meta(output, KIND, FORMAT_VERSION, norm, options, described, report)
    binary_path = None
    program = shutil.which("build_binary") if build_binary == "auto" else build_binary
    if program:
        binary_path = output.with_suffix(".binary")
        subprocess.run([program, str(output), str(binary_path)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        write_meta(binary_path, KIND, FORMAT_VERSION, norm, options, described, report)
    report["binary"] = str(binary_path) if binary_path else None
    lines = [f"# KenLM model {output.name}", "",
             f"- training files: {', '.join(files)}",
             f"- order {order}, normalisation {norm.model_dump()}",
             f"- {summary['sentences']} sentences, {summary['tokens']} tokens, "
             f"vocabulary {summary['vocabulary']}",
             f"- n-grams per order: {summary['ngrams']}",
             f"- discounts (D1, D2, D3+) per order: {summary['discounts']}",
             f"- binary: {report['binary']}",
             f"- {report['seconds']} s ({report['estimate_seconds']} s estimating)"]
    output.with_name(output.name + ".report.md").write_text("\n".join(lines) + "\n",
                                                            encoding="utf-8")
    return {**report, "model": str(output), "files": files}


class LanguageModel:
    """A KenLM model (ARPA or binary) with the normalisation it was trained with."""

    def __init__(self, model: Any, normalization: NormalizeOptions, meta: dict[str, Any]) -> None:
        self._model = model
        self.normalization = normalization
        self.meta = meta
        self.order = int(model.order)

    @classmethod
    def load(cls, path: str | os.PathLike, normalization: NormalizeOptions | None = None,
             require_meta: bool = True) -> LanguageModel:
        """Load ``path`` after checking its sidecar; ModelMismatchError if unusable."""
        import kenlm

        norm = normalization or NormalizeOptions()
        path = str(path)
        if not os.path.isfile(path):
            raise ModelMismatchError(f"KenLM model {path!r} does not exist")
        meta: dict[str, Any] = {}
        if require_meta or os.path.isfile(path + ".meta.json"):
            meta = check_meta(path, KIND, FORMAT_VERSION, norm)
        try:
            model = kenlm.Model(path)
        except (OSError, RuntimeError, ValueError) as e:
            raise ModelMismatchError(f"KenLM model {path!r} cannot be loaded: {e}") from None
        return cls(model, norm, meta)

    def score_sentences(self, sentences: list[list[str]]) -> tuple[float, int]:
        """Return (sum of log10 p over the sentences with </s>, tokens counted with </s>)."""
        total, n = 0.0, 0
        for toks in sentences:
            total += self._model.score(" ".join(toks), bos=True, eos=True)
            n += len(toks) + 1
        return total, n

    def doc_score(self, text: str) -> tuple[float, int]:
        """Return ``(sum log10 p, token count)`` of a document (CCNet's per-line scoring)."""
        return self.score_sentences(lm_sentences(text, self.normalization))

    def perplexity(self, text: str) -> float | None:
        """Return the document's perplexity, or ``None`` when it has no tokens."""
        total, n = self.doc_score(text)
        if n == 0:
            return None
        return 10.0 ** (-total / n)
