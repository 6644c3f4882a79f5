"""KenLM: CCNet normalisation, the Kneser-Ney estimator (against lmplz), ARPA, the step."""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline.core.document import Document
from pipeline.core.step import StepContext, StepStats
from pipeline.text.kenlm.estimate import DiscountError, estimate
from pipeline.text.kenlm.model import LanguageModel, lm_sentences
from pipeline.text.model_meta import ModelMismatchError
from pipeline.text.normalize import NormalizeOptions, normalize_line


def _texts(path: Path, n: int, skip: int = 0) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= skip + n:
                break
            if i >= skip:
                out.append(json.loads(line)["text"])
    return out


def _write_jsonl(texts: list[str], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _lm_cli(argv: list[str]) -> int:
    from pipeline.cli import lm as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["lm", "train", *argv])
    return args.func(args)


def read_arpa(path: Path) -> dict[tuple[str, ...], tuple[float, float]]:
    """Parse an ARPA file into {n-gram: (log10 p, log10 backoff)}."""
    grams: dict[tuple[str, ...], tuple[float, float]] = {}
    section = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:].split("-")[0])
            continue
        if section and line and not line.startswith("\\"):
            parts = line.split("\t")
            words = tuple(parts[1].split(" "))
            assert len(words) == section, line
            grams[words] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return grams


def backoff_log10(grams: dict, context: tuple[str, ...], word: str) -> float:
    """log10 p(word | context) by ARPA backoff (what KenLM computes)."""
    total = 0.0
    ctx = context
    while True:
        if ctx + (word,) in grams:
            return total + grams[ctx + (word,)][0]
        if not ctx:
            return total + grams[("<unk>",)][0]
        if ctx in grams:
            total += grams[ctx][1]
        ctx = ctx[1:]


@pytest.fixture(scope="module")
def small_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An order-3 model of 60 Wikipedia articles (~100,000 contexts, each checked for a sum
    of one: the check's time grows with the model), trained through the CLI."""
    tmp = tmp_path_factory.mktemp("kenlm")
    train = _write_jsonl(_texts(shared_data / "reference" / "wiki_ref.jsonl.gz", 60),
                         tmp / "train.jsonl")
    model = tmp / "wiki3.arpa"
    rc = _lm_cli(["--order", "3", "--input", str(train), "--output", str(model),
                  "--build-binary", "none", "--quiet"])
    return {"rc": rc, "model": model, "tmp": tmp, "shared": shared_data}


def test_ccnet_normalisation() -> None:
    assert normalize_line("  Élan VITAL 1984 — “Quoted” naïve… ") == 'elan vital 0000  -  "quoted" naive...'
    assert normalize_line("Ｘ：１２３！ «ok» ’t") == 'ｘ:000! "ok" \'t'
    assert normalize_line("tab\tand\x07bell") == "tabandbell"
    assert normalize_line("٣ apples") == "0 apples"  # every Unicode digit
    assert normalize_line("Été 1984", NormalizeOptions(lower=False, digits_to_zero=False)) == "Ete 1984"
    assert normalize_line("«x»", NormalizeOptions(punct="remove")) == "x"
    assert normalize_line("«x»", NormalizeOptions(punct="keep")) == "«x»"
    assert lm_sentences("A <s> b\n\n  \nC </s> <unk>\n") == [["a", "b"], ["c"]]
    # whole-document normalisation equals CCNet's line-by-line normalisation
    from pipeline.text.normalize import normalized_lines

    text = "Ünïcode “Quotes” 42\r\nTabs\there\x85next\u2028para ＡＢ！\n\n\x07 Σίσυφος ΣΑΣ\n"
    per_line = [" ".join(normalize_line(x).split()) for x in text.splitlines()]
    assert normalized_lines(text) == [x for x in per_line if x]
    assert normalized_lines(text, NormalizeOptions(punct="remove", lower=False)) == [
        x for x in (" ".join(normalize_line(y, NormalizeOptions(punct="remove", lower=False))
                             .split()) for y in text.splitlines()) if x]


def test_every_context_sums_to_one(small_model: dict) -> None:
    """For each context c: sum_w p(w|c) = seen mass + b(c) * (1 - lower-order seen mass) = 1."""
    assert small_model["rc"] == 0
    grams = read_arpa(small_model["model"])
    vocab = [g[0] for g in grams if len(g) == 1 and g[0] != "<s>"]
    assert math.isclose(sum(10 ** grams[(w,)][0] for w in vocab), 1.0, abs_tol=1e-4)
    seen: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for g in grams:
        if len(g) > 1:
            seen[g[:-1]].append(g[-1])
    assert len(seen) > 10_000
    worst = 0.0
    for ctx, words in seen.items():
        here = sum(10 ** grams[ctx + (w,)][0] for w in words)
        lower = sum(10 ** backoff_log10(grams, ctx[1:], w) for w in words)
        total = here + 10 ** grams[ctx][1] * (1.0 - lower)
        worst = max(worst, abs(total - 1.0))
    assert worst < 1e-4


def test_brute_force_sums_and_kenlm_agree_on_tiny_corpus(tmp_path: Path) -> None:
    import kenlm

    sents = [s.split() for s in ["a b c a b", "a c b", "b a c c a", "c b a b c a b", "a a b c",
                                 "b b a c", "c a", "a b"] * 2 + ["c c c"]]
    est = estimate(sents, 3, discount_fallback=True)
    from pipeline.text.kenlm.estimate import write_arpa

    path = tmp_path / "tiny.arpa"
    with open(path, "w") as f:
        write_arpa(f, est.orders, est.tokens, est.words)
    grams = read_arpa(path)
    vocab = [w for w in est.words if w != "<s>"]
    for ctx in [(), ("a",), ("<s>",), ("b", "a"), ("<s>", "c"), ("c", "c"), ("x", "y")]:
        assert math.isclose(sum(10 ** backoff_log10(grams, ctx, w) for w in vocab), 1.0,
                            abs_tol=1e-5), ctx
    model = kenlm.Model(str(path))
    for sent in ["a b c", "c c a b", "b z a"]:
        toks = ("<s>", *sent.split(), "</s>")
        ours = sum(backoff_log10(grams, toks[max(0, i - 2):i], toks[i]) for i in range(1, len(toks)))
        assert math.isclose(model.score(sent), ours, abs_tol=1e-4)


def test_discounts_need_enough_data() -> None:
    with pytest.raises(DiscountError, match="adjusted count"):
        estimate([["a", "b"], ["a", "b"]], 3)


def test_train_command_writes_meta_and_report(small_model: dict) -> None:
    model: Path = small_model["model"]
    meta = json.loads(model.with_name("wiki3.arpa.meta.json").read_text())
    assert meta["kind"] == "kenlm" and meta["options"]["order"] == 3
    assert meta["normalization"] == NormalizeOptions().model_dump()
    assert meta["training_files"][0]["sha256"] and meta["report"]["ngrams"][0] > 1000
    assert "discounts" in model.with_name("wiki3.arpa.report.md").read_text()
    bad = small_model["tmp"] / "bad.arpa"
    rc = _lm_cli(["--order", "3", "--input", str(small_model["tmp"] / "nothing*.txt"),
                  "--output", str(bad), "--quiet"])
    assert rc == 2 and not bad.exists()


@pytest.mark.skipif(shutil.which("lmplz") is None, reason="lmplz not on PATH")
def test_perplexity_matches_lmplz(shared_data: Path, tmp_path: Path) -> None:
    """Same normalised tokens, order 5: held-out perplexity within 2% of lmplz's model."""
    import kenlm

    sents = [s for t in _texts(shared_data / "reference" / "wiki_ref.jsonl.gz", 300)
             for s in lm_sentences(t)]
    text = tmp_path / "train.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in sents), encoding="utf-8")
    ref = tmp_path / "lmplz.arpa"
    with open(text, "rb") as fin, open(ref, "wb") as fout:
        subprocess.run(["lmplz", "-o", "5", "-S", "300M", "-T", str(tmp_path)], stdin=fin,
                       stdout=fout, stderr=subprocess.DEVNULL, check=True)
    ours = tmp_path / "ours.arpa"
    assert _lm_cli(["--order", "5", "--input", str(text), "--output", str(ours),
                    "--build-binary", "none", "--quiet"]) == 0
    # the same n-grams, order by order
    head = [ln for ln in ref.read_text().splitlines()[:8] if ln.startswith("ngram")]
    assert head == [ln for ln in ours.read_text().splitlines()[:8] if ln.startswith("ngram")]
    held = [s for t in _texts(shared_data / "eval" / "wiki_val.jsonl.gz", 30) for s in lm_sentences(t)]
    n = sum(len(s) + 1 for s in held)

    def pp(m: kenlm.Model) -> float:
        return 10 ** (-sum(m.score(" ".join(s)) for s in held) / n)

    p_ref, p_ours = pp(kenlm.Model(str(ref))), pp(kenlm.Model(str(ours)))
    assert abs(p_ours / p_ref - 1) < 0.02, (p_ours, p_ref)


def test_document_perplexity_is_ccnets(small_model: dict) -> None:
    import kenlm

    lm = LanguageModel.load(small_model["model"])
    raw = kenlm.Model(str(small_model["model"]))
    text = "The city was founded in 1742.\n\nIt is the capital of the Region!"
    lines = ["the city was founded in 0000.", "it is the capital of the region!"]
    total = sum(raw.score(line) for line in lines)
    n = sum(len(line.split()) + 1 for line in lines)
    assert lm.perplexity(text) == pytest.approx(10 ** (-total / n))
    assert lm.perplexity("") is None and lm.perplexity(" \n \n") is None


def test_model_checks(small_model: dict, shared_data: Path) -> None:
    model: Path = small_model["model"]
    with pytest.raises(ModelMismatchError, match="normalisation differs.*digits_to_zero"):
        LanguageModel.load(model, NormalizeOptions(digits_to_zero=False))
    with pytest.raises(ModelMismatchError, match="does not exist"):
        LanguageModel.load(small_model["tmp"] / "none.arpa")
    with pytest.raises(ModelMismatchError, match="no sidecar"):
        LanguageModel.load(shared_data / "models" / "kenlm_sdist_test.arpa")
    assert LanguageModel.load(shared_data / "models" / "kenlm_sdist_test.arpa",
                              require_meta=False).order == 5
    broken = small_model["tmp"] / "broken.arpa"
    broken.write_text(model.read_text()[:5000])
    shutil.copy(model.with_name(model.name + ".meta.json"), broken.with_name("broken.arpa.meta.json"))
    with pytest.raises(ModelMismatchError, match="truncated or replaced"):
        LanguageModel.load(broken)
    broken.with_name("broken.arpa.meta.json").unlink()
    with pytest.raises(ModelMismatchError, match="cannot be loaded"):
        LanguageModel.load(broken, require_meta=False)


def test_step_scores_buckets_and_filters(small_model: dict, shared_data: Path) -> None:
    from pipeline.core.config import JobConfigError, parse_steps
    from pipeline.core.registry import get_step_class

    cls = get_step_class("kenlm_v1")
    wiki = _texts(shared_data / "eval" / "wiki_val.jsonl.gz", 3)
    docs = [Document(f"w{i}", t) for i, t in enumerate(wiki)] + [
        Document("spam", "CLICK HERE!!! xxx $$$ viagra cheap cheap cheap 100% FREE >>> buy"),
        Document("ru", "Все люди рождаются свободными и равными в своем достоинстве и правах."),
        Document("empty", "  \n "),
    ]
    fresh = lambda: [Document(d.id, d.text) for d in docs]  # noqa: E731
    annotate = cls(cls.Options(model=str(small_model["model"])))
    out = {d.id: d for d in annotate.run(fresh(), StepContext(StepStats()))}
    assert len(out) == len(docs)
    pps = {k: d.metadata["perplexity"] for k, d in out.items()}
    assert pps["empty"] is None and out["empty"].metadata["bucket"] == "all"
    assert max(pps[f"w{i}"] for i in range(3)) < min(pps["spam"], pps["ru"])
    assert all(math.isfinite(p) for k, p in pps.items() if k != "empty")

    cut = cls.Options(model=str(small_model["model"]), max_perplexity=pps["w0"] + 1)
    ctx = StepContext(StepStats())
    kept = [d.id for d in cls(cut).run(fresh(), ctx)]
    assert "w0" in kept and "spam" not in kept and "empty" not in kept
    assert ctx.stats.dropped["no_text"] == 1 and ctx.stats.dropped["perplexity_too_high"] >= 2

    # CCNet buckets from a cutoff table in CCNet's format, our own percentiles
    csv_path = small_model["tmp"] / "cutoff.csv"
    lo, hi = sorted([pps["w0"], pps["spam"]])
    rows = [",en"] + [f"{p},{lo + 0.5 if p < 45 else hi - 0.5}" for p in range(101)]
    csv_path.write_text("\n".join(rows) + "\n")
    step = cls(cls.Options(model=str(small_model["model"]), cutoff_csv=str(csv_path),
                           keep_buckets=["head"]))
    ctx = StepContext(StepStats())
    kept_docs = list(step.run([Document("w0", wiki[0]), Document("spam", docs[3].text)], ctx))
    assert [d.metadata["bucket"] for d in kept_docs] == ["head"]
    assert ctx.stats.dropped == {"bucket_tail": 1}

    with pytest.raises(JobConfigError, match="keep_buckets"):
        parse_steps([{"kenlm_v1": {"model": "m.arpa", "keep_buckets": ["top"]}}])
    ccnet = cls(cls.Options(model=str(small_model["model"]), require_meta=True,
                            cutoff_csv=str(shared_data / "models" / "ccnet_perplexity_cutoff.csv")))
    ccnet.setup()
    assert ccnet._cutoffs["en"][0] < ccnet._cutoffs["en"][1]


def test_binary_model_when_build_binary_exists(small_model: dict) -> None:
    program = shutil.which("build_binary") or os.environ.get("KENLM_BUILD_BINARY")
    if not program:
        pytest.skip("build_binary not on PATH")
    out = small_model["tmp"] / "bin.arpa"
    train = small_model["tmp"] / "train.jsonl"
    assert _lm_cli(["--order", "3", "--input", str(train), "--output", str(out),
                    "--build-binary", program, "--quiet"]) == 0
    binary = out.with_suffix(".binary")
    lm_a, lm_b = LanguageModel.load(out), LanguageModel.load(binary)
    text = "The river flows through the old town."
    assert lm_a.perplexity(text) == pytest.approx(lm_b.perplexity(text), rel=1e-4)
