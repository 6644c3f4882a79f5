"""``selection: sample`` in kenlm_v1, fasttext_quality_v1 and toxicity_v1, on real documents.

Each step keeps a document with probability sigmoid(±(score - threshold) / temperature),
seeded by the document id: the same documents on a rerun, in another order, in other
chunks; the threshold mode (the default) is unchanged. That the kept share matches the mean
keep probability is tested on 20,000 decisions in tests/pipeline/text/test_sampling.py.
"""

from __future__ import annotations

import copy
import gzip
import json
import pickle
import statistics
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.document import Document
from pipeline.core.registry import get_step_class
from pipeline.core.step import Step, StepContext, StepStats
from pipeline.text.sampling import keep_probability, uniform

#: step -> (score key, higher is better, threshold option, reason of a threshold drop)
STEPS = {
    "kenlm_v1": ("perplexity", False, "max_perplexity", "perplexity_too_high"),
    "fasttext_quality_v1": ("quality_score", True, "threshold", "low_quality"),
    "toxicity_v1": ("toxicity_score", False, "threshold", "toxic"),
}


@pytest.fixture(scope="module")
def docs(shared_data: Path) -> list[Document]:
    """60 Wikipedia articles and 140 SpamAssassin messages."""
    out = []
    with gzip.open(shared_data / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(islice(f, 60)):
            out.append(Document(f"wiki-{i}", json.loads(line)["text"]))
    with gzip.open(shared_data / "noisy" / "spamassassin.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in islice(f, 0, 140 * 40, 40):
            m = json.loads(line)
            out.append(Document(m["id"], m["raw"].split("\n\n", 1)[-1]))
    return out


def _base_options(name: str, shared_data: Path) -> dict[str, Any]:
    if name == "kenlm_v1":
        return {"model": str(shared_data / "models" / "lmplz_reference" / "order5.binary"),
                "require_meta": False}
    if name == "fasttext_quality_v1":
        # a real supervised fastText model (sentiment): only its scores matter here
        return {"model": str(shared_data / "models" / "gensim_pang_lee_polarity_fasttext.bin"),
                "label": "pos", "require_meta": False}
    return {}


@pytest.fixture(scope="module")
def scored(docs: list[Document], shared_data: Path) -> dict[str, dict[str, float | None]]:
    """Each step's written score per document id (annotate-only runs)."""
    out = {}
    for name, (key, _, option, _) in STEPS.items():
        step = _step(name, {**_base_options(name, shared_data), option: None})
        kept, _ = _run(step, docs)
        out[name] = {d.id: d.metadata[key] for d in kept}
    return out


def _step(name: str, options: dict[str, Any]) -> Step:
    cls = get_step_class(name)
    step = cls(cls.Options(**options))
    step.setup()
    return step


def _run(step: Step, docs: list[Document], chunk: int | None = None
         ) -> tuple[list[Document], dict[str, str]]:
    removed: dict[str, str] = {}
    ctx = StepContext(StepStats(), lambda d, s, r: removed.__setitem__(d.id, r))
    docs = [copy.deepcopy(d) for d in docs]
    out: list[Document] = []
    for i in range(0, len(docs), chunk or len(docs)):
        out += step.run(docs[i:i + (chunk or len(docs))], ctx)
    return out, removed


def _sampling(name: str, shared_data: Path, scores: dict[str, float | None],
              seed: int = 0) -> dict[str, Any]:
    """Sampling options with the threshold at the median score and a temperature of a
    quarter of the scores' spread, so that many documents fall in between."""
    values = sorted(v for v in scores.values() if v is not None)
    spread = values[int(0.9 * len(values))] - values[int(0.1 * len(values))]
    _, _, option, _ = STEPS[name]
    return {**_base_options(name, shared_data), "selection": "sample",
            option: statistics.median(values), "temperature": spread / 4, "seed": seed}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_sample_keeps_by_the_stated_probability_and_the_id(
        name: str, docs: list[Document], scored: dict, shared_data: Path) -> None:
    key, higher, option, _ = STEPS[name]
    opts = _sampling(name, shared_data, scored[name])
    step = _step(name, opts)
    keep_key = type(step.options).keep_key
    assert keep_key.endswith("_keep_probability") and keep_key in step.metadata_fields
    out, removed = _run(step, docs)
    kept = {d.id for d in out}
    expected_kept = 0.0
    for d in out:
        p = keep_probability(d.metadata[key], opts[option], opts["temperature"], higher)
        assert d.metadata[keep_key] == pytest.approx(p, rel=1e-12)
        assert uniform(d.id, opts["seed"]) < p
    for doc in docs:
        score = scored[name][doc.id]
        if score is None:
            continue
        p = keep_probability(score, opts[option], opts["temperature"], higher)
        expected_kept += p
        assert (doc.id in kept) == (uniform(doc.id, opts["seed"]) < p)
        if doc.id in removed:
            assert removed[doc.id].endswith("_sampled_out")
    # the sampled documents lie on both sides of the threshold
    assert any(scored[name][i] is not None and (scored[name][i] < opts[option]) == higher
               for i in kept)
    assert removed


@pytest.mark.parametrize("name", sorted(STEPS))
def test_sample_decisions_repeat_across_runs_orders_and_chunks(
        name: str, docs: list[Document], scored: dict, shared_data: Path) -> None:
    opts = _sampling(name, shared_data, scored[name])
    first, _ = _run(_step(name, opts), docs)
    clone = pickle.loads(pickle.dumps(_step(name, opts)))
    clone.setup()
    again, _ = _run(clone, list(reversed(docs)), chunk=7)
    assert {d.id: d.metadata for d in first} == {d.id: d.metadata for d in again}
    other, _ = _run(_step(name, {**opts, "seed": 1}), docs)
    assert {d.id for d in other} != {d.id for d in first}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_threshold_mode_is_unchanged(name: str, docs: list[Document], scored: dict,
                                     shared_data: Path) -> None:
    key, higher, option, reason = STEPS[name]
    values = sorted(v for v in scored[name].values() if v is not None)
    threshold = statistics.median(values)
    base = {**_base_options(name, shared_data), option: threshold}
    default = _step(name, base)
    explicit = _step(name, {**base, "selection": "threshold", "temperature": 5.0, "seed": 3})
    assert default.metadata_fields == type(default).metadata_fields
    keep_key = type(default.options).keep_key
    assert keep_key not in default.metadata_fields
    out, removed = _run(default, docs)
    out2, removed2 = _run(explicit, docs)
    assert [(d.id, d.text, d.metadata) for d in out] == [(d.id, d.text, d.metadata) for d in out2]
    assert removed == removed2
    assert all(keep_key not in d.metadata for d in out)
    for doc in docs:
        score = scored[name][doc.id]
        if score is None:
            continue
        if name == "kenlm_v1":
            dropped = score > threshold
        elif name == "fasttext_quality_v1":
            dropped = score < threshold
        else:
            dropped = score >= threshold
        assert (doc.id in removed) == dropped, (doc.id, score, threshold)
        if dropped:
            assert removed[doc.id] == reason


def test_two_sampled_steps_in_one_job_keep_both_probabilities(
        docs: list[Document], scored: dict, shared_data: Path) -> None:
    """Each step writes p_keep under its own key: a later step does not overwrite it."""
    from pipeline.execution.runner import all_metadata_fields, run_chain

    steps = [_step(name, _sampling(name, shared_data, scored[name]))
             for name in ("toxicity_v1", "kenlm_v1")]
    keys = [type(s.options).keep_key for s in steps]
    assert keys == ["toxicity_keep_probability", "perplexity_keep_probability"]
    assert set(keys) <= all_metadata_fields(steps).keys()
    out = run_chain([copy.deepcopy(d) for d in docs], steps,
                    [StepContext(StepStats()) for _ in steps])
    assert out and all(set(keys) <= d.metadata.keys() for d in out)
    for d in out:
        tox = keep_probability(d.metadata["toxicity_score"], steps[0].options.threshold,
                               steps[0].options.temperature, False)
        assert d.metadata["toxicity_keep_probability"] == pytest.approx(tox, rel=1e-12)
