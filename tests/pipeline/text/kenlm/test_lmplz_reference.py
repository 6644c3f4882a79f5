"""The Kneser-Ney estimator against KenLM's own ``lmplz`` output, n-gram by n-gram.

``models/lmplz_reference/`` (shared data) holds a corpus, the ARPA models ``lmplz -o 3`` and
``lmplz -o 5`` estimated from it, ``build_binary``'s order-5 binary and lmplz's logs with
its discounts. lmplz read ``corpus.txt`` as it is (whitespace tokens, one sentence per line),
so our estimator gets ``line.split()`` of each line, and the CLI gets every normalisation off.

Tolerances are lmplz's own precision, not a looseness: lmplz computes and stores
probabilities in float32 and prints its ARPA values at float32 precision (the largest
difference from our float64 values is 5.3e-7 in log10, on order-5 n-grams), and its log
prints discounts, also computed in float32, to 6 significant digits. A 10% change of one
discount moves probabilities by more than 1e-3 in log10.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.text.kenlm.estimate import Estimate, estimate, write_arpa
from pipeline.text.kenlm.model import LanguageModel, lm_sentences
from pipeline.text.normalize import NormalizeOptions

LOG10_TOL = 1e-6  # float32 arithmetic in lmplz (measured worst case 5.3e-7)
FLOAT32_REL = 2.0**-22  # a few float32 rounding steps, relative
NO_NORMALIZATION = NormalizeOptions(lower=False, strip_accents=False, digits_to_zero=False,
                                    punct="keep")


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> Path:
    """The lmplz reference folder (fails, not skips, when shared data lacks it)."""
    folder = shared_data / "models" / "lmplz_reference"
    assert folder.is_dir(), f"{folder} is missing from the shared data"
    return folder


@pytest.fixture(scope="module")
def corpus(reference: Path) -> list[list[str]]:
    """The reference corpus as lmplz tokenised it: whitespace tokens, one sentence per line."""
    lines = (reference / "corpus.txt").read_text(encoding="utf-8").splitlines()
    return [toks for toks in (line.split() for line in lines) if toks]


@pytest.fixture(scope="module")
def lmplz_arpa(reference: Path) -> Callable[[int], tuple[list[int], Model]]:
    """``order -> (n-gram counts, n-grams)`` of lmplz's ARPA, each parsed once."""
    cache: dict[int, tuple[list[int], Model]] = {}

    def get(order: int) -> tuple[list[int], Model]:
        if order not in cache:
            cache[order] = read_arpa(reference / f"order{order}.arpa.gz")
        return cache[order]

    return get


@pytest.fixture(scope="module")
def our_estimate(corpus: list[list[str]]) -> Callable[[int], Estimate]:
    """``order -> our estimate of the reference corpus``, each estimated once."""
    cache: dict[int, Estimate] = {}

    def get(order: int) -> Estimate:
        if order not in cache:
            cache[order] = estimate(corpus, order)
        return cache[order]

    return get


Model = dict[str, tuple[float, float]]  # n-gram as ARPA spells it -> (log10 p, log10 backoff)


def read_arpa(path: Path) -> tuple[list[int], Model]:
    """Return the header's n-gram counts and the model's n-grams.

    An n-gram without a backoff column has backoff 0 (log10 of 1), as in KenLM.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    counts: list[int] = []
    grams: Model = {}
    section = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("ngram "):
                counts.append(int(line.split("=")[1]))
            elif line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:].split("-")[0])
            elif section and line and not line.startswith("\\"):
                parts = line.split("\t")
                assert parts[1].count(" ") == section - 1, line
                grams[parts[1]] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return counts, grams


def estimated_ngrams(est: Estimate) -> Model:
    """Our estimate's n-grams with their unrounded float64 values."""
    words = np.array(est.words, dtype=object)
    grams: Model = {}
    for o in est.orders:
        if o.n == 1:
            spelled = words.tolist()
        else:
            cols = [words[est.tokens[o.pos + k]] for k in range(o.n)]
            spelled = [" ".join(g) for g in zip(*cols, strict=True)]
        grams.update(zip(spelled, zip(o.log10_prob.tolist(), o.log10_backoff.tolist(),
                                      strict=True), strict=True))
    return grams


def logged_discounts(log: Path) -> list[tuple[str, str, str]]:
    """Return lmplz's printed (D1, D2, D3+) per order, as the strings it printed."""
    found = re.findall(r"^(\d+) \d+ D1=(\S+) D2=(\S+) D3\+=(\S+)$",
                       log.read_text(encoding="utf-8"), re.M)
    assert [int(n) for n, *_ in found] == list(range(1, len(found) + 1)), found
    return [(d1, d2, d3) for _, d1, d2, d3 in found]


def printed_tolerance(printed: str, digits: int) -> float:
    """Half a unit in the last of ``digits`` significant digits of a printed number."""
    value = abs(float(printed))
    return 0.5 * 10.0 ** (math.floor(math.log10(value)) - digits + 1) if value else 0.0


def assert_same_model(ours: Model, ref: Model, tol: float) -> None:
    """Same n-grams, and every probability and backoff within ``tol`` (log10)."""
    assert ours.keys() == ref.keys(), (
        f"{len(ours.keys() - ref.keys())} n-grams only ours, e.g. "
        f"{sorted(ours.keys() - ref.keys())[:3]}; {len(ref.keys() - ours.keys())} only "
        f"lmplz's, e.g. {sorted(ref.keys() - ours.keys())[:3]}")
    bad = [(g, ours[g], ref[g]) for g in ref
           if abs(ours[g][0] - ref[g][0]) > tol or abs(ours[g][1] - ref[g][1]) > tol]
    assert not bad, f"{len(bad)} of {len(ref)} n-grams differ from lmplz, e.g. {bad[:3]}"


def test_corpus_is_fed_as_lmplz_read_it(reference: Path, corpus: list[list[str]]) -> None:
    """With every normalisation off, our tokenisation is lmplz's whitespace split."""
    text = (reference / "corpus.txt").read_text(encoding="utf-8")
    assert lm_sentences(text, NO_NORMALIZATION) == corpus
    assert sum(map(len, corpus)) == 65_172  # the README's token count


@pytest.mark.parametrize("order", [3, 5])
def test_estimate_equals_lmplz(reference: Path, lmplz_arpa: Callable, our_estimate: Callable,
                               order: int) -> None:
    """Discounts to lmplz's printed digits; every n-gram's probability and backoff."""
    est = our_estimate(order)
    printed = logged_discounts(reference / f"lmplz_order{order}.log")
    assert len(est.discounts) == len(printed) == order
    for n, (ours, theirs) in enumerate(zip(est.discounts, printed, strict=True), 1):
        for k, (d, p) in enumerate(zip(ours, theirs, strict=True), 1):
            # lmplz computes in float32 (order 1's D2 is 1.1496849 there, 1.14968505 here)
            tol = printed_tolerance(p, 6) + FLOAT32_REL * abs(float(p))
            assert abs(d - float(p)) <= tol, f"order {n} D{k}: ours {d!r}, lmplz {p}"
    counts, ref = lmplz_arpa(order)
    assert [o.size for o in est.orders] == counts
    assert_same_model(estimated_ngrams(est), ref, LOG10_TOL)


def test_train_command_writes_lmplz_model(reference: Path, lmplz_arpa: Callable,
                                          tmp_path: Path) -> None:
    """``pipeline lm train`` with normalisation off writes lmplz's order-5 ARPA."""
    from pipeline.cli import lm as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "order5.arpa"
    args = parser.parse_args([
        "lm", "train", "--order", "5", "--input", str(reference / "corpus.txt"),
        "--output", str(out), "--no-lower", "--keep-accents", "--keep-digits",
        "--punct", "keep", "--build-binary", "none", "--quiet"])
    assert args.func(args) == 0
    ours_counts, ours = read_arpa(out)
    ref_counts, ref = lmplz_arpa(5)
    assert ours_counts == ref_counts
    # write_arpa prints 7 significant digits: half a unit of them for values below 10
    assert_same_model(ours, ref, LOG10_TOL + 5e-7)


@pytest.fixture(scope="module")
def scored_lines(reference: Path, shared_data: Path) -> list[str]:
    """Training lines and held-out lines (with words the model never saw) to score."""
    train = (reference / "corpus.txt").read_text(encoding="utf-8").splitlines()[:200]
    with gzip.open(shared_data / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as f:
        held = [json.loads(next(f))["text"] for _ in range(20)]
    return train + held + ["Zyxwv qqqq unseen-token Erfurt", "the the the the the"]


def test_binary_model_scores_as_the_arpa(reference: Path, our_estimate: Callable,
                                         scored_lines: list[str], tmp_path: Path) -> None:
    """``order5.binary`` loaded as the kenlm_v1 step loads models scores as lmplz's ARPA,
    and as the model our estimator writes."""
    binary = LanguageModel.load(reference / "order5.binary", NO_NORMALIZATION,
                                require_meta=False)
    arpa = LanguageModel.load(reference / "order5.arpa.gz", NO_NORMALIZATION,
                              require_meta=False)
    est = our_estimate(5)
    ours_path = tmp_path / "ours.arpa"
    with open(ours_path, "w", encoding="utf-8") as f:
        write_arpa(f, est.orders, est.tokens, est.words)
    ours = LanguageModel.load(ours_path, NO_NORMALIZATION, require_meta=False)
    assert binary.order == arpa.order == ours.order == 5
    for text in scored_lines:
        b_total, b_n = binary.doc_score(text)
        a_total, a_n = arpa.doc_score(text)
        o_total, o_n = ours.doc_score(text)
        assert b_n == a_n == o_n > 0
        # both hold lmplz's float32 values: the same sums, up to summation order
        assert b_total == pytest.approx(a_total, rel=1e-6, abs=1e-6), text
        # a token's log10 p may add backoffs to a probability: allow two terms' tolerance each
        # (measured worst mean per token: 6e-7)
        assert b_total == pytest.approx(o_total, abs=2 * LOG10_TOL * b_n), text
    assert binary.perplexity(scored_lines[0]) == pytest.approx(arpa.perplexity(scored_lines[0]),
                                                               rel=1e-6)
