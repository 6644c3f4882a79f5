"""The ablation report: per-arm mean and spread over seeds, each arm's repetition, paired
effects with seed and evaluation-document noise separated, multiplicity and power
(:mod:`pipeline.ablation.stats`), the planted control's verdict, and a plot of validation
loss against training tokens (SVG, no plotting library needed). numpy and the standard
library only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.ablation.stats import BOOTSTRAP_SAMPLES, holm, paired_effect

ALPHA = 0.05
POWER = 0.8
REPEAT_WARN = 4.0  # Muennighoff et al. 2023: up to ~4 epochs repeated data is almost as good
COLORS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#000000"]


def _mean_std(xs: list[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _shared_tail(arms: dict[str, Any]) -> int:
    """How many final steps every arm shares (the decontamination the ablation appends)."""
    lists = [info["steps"] for info in arms.values()]
    if len(lists) < 2:
        return 0
    n = 0
    while all(len(s) > n for s in lists) and all(s[-1 - n] == lists[0][-1 - n] for s in lists):
        n += 1
    return n


def parent_arm(arm: str, arms: dict[str, Any]) -> str | None:
    """The arm whose steps are the longest proper prefix of ``arm``'s steps, if any.

    Steps that every arm ends with (``decontaminate_v1`` against the eval streams) are not
    part of what an arm adds, so they are left out of the comparison.
    """
    tail = _shared_tail(arms)
    own = {a: info["steps"][: len(info["steps"]) - tail] for a, info in arms.items()}
    steps = own[arm]
    best, best_len = None, -1
    for other, s in own.items():
        if other != arm and len(s) < len(steps) and steps[: len(s)] == s and len(s) > best_len:
            best, best_len = other, len(s)
    return best


def is_control(info: dict[str, Any]) -> bool:
    """Whether an arm is a planted control: one of its steps is a ``control_*`` step."""
    return any(_step_name(st).startswith("control_") for st in info["steps"])


def _step_name(entry: Any) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


def repetition(info: dict[str, Any], budget: int) -> dict[str, float]:
    """An arm's distinct tokens (the documents it trains from), its repeat factor at
    ``budget`` tokens and the fraction of its distinct tokens that training reaches."""
    distinct = int(info.get("tokens_in_stream") or info["tokens_kept"])
    r = budget / distinct
    return {"distinct_tokens": distinct, "repeats": r, "fraction_trained": min(1.0, r)}


def _load_docs(out: Path | None, run: dict[str, Any], name: str) -> np.ndarray | None:
    rel = (run.get("eval_docs") or {}).get(name)
    if out is None or not rel or not (out / rel).is_file():
        return None
    return np.load(out / rel)


def summarize(record: dict[str, Any], out: Path | None = None,
              alpha: float = ALPHA, power: float = POWER) -> dict[str, Any]:
    """Per-arm statistics, paired effects against the parent arm and ``raw``, their noise,
    multiplicity and power, the planted controls' verdicts and the pairing check.

    Runs pair by seed. Per-document losses (``eval_docs`` of each run, relative to ``out``)
    add the bootstrap over documents; without them only seed noise is measured. An effect
    is *significant* when its Holm-adjusted p-value (over every comparison here) is below
    ``alpha``; see :mod:`pipeline.ablation.stats` for the formulas.
    """
    arms = {a: record["arms"][a] for a in record.get("arm_order", record["arms"])}
    evals = list(record["eval"])
    budget = int(record["budget_tokens"])
    # a record resumed with fewer arms still holds the other arms' runs: report the chosen ones
    runs = {(r["arm"], r["seed"]): r for r in record["runs"]
            if r.get("final_eval") and r["arm"] in arms}
    finals: dict[str, dict[str, list[float]]] = {a: {e: [] for e in evals} for a in arms}
    for (arm, _), run in sorted(runs.items(), key=lambda kv: kv[0][1]):
        for e in evals:
            if e in run["final_eval"]:
                finals[arm][e].append(run["final_eval"][e])
    stats = {
        a: {e: dict(zip(("mean", "std"), _mean_std(v), strict=True)) | {"n": len(v)}
            for e, v in finals[a].items() if v}
        for a in arms
    }
    # pairing: the same seed must give the same initial weights in every arm
    digests: dict[int, set[str]] = {}
    for (_, seed), run in runs.items():
        if run.get("init_digest"):
            digests.setdefault(seed, set()).add(run["init_digest"])
    pairing = {"checked": bool(digests),
               "unpaired_seeds": sorted(s for s, d in digests.items() if len(d) > 1)}

    baseline = "raw" if "raw" in arms else next(iter(arms))
    effects = []
    for arm in arms:
        parent = parent_arm(arm, arms)
        refs = [("parent", parent)] + ([("raw", baseline)] if baseline != parent else [])
        for ref_kind, ref in refs:
            if ref is None or ref == arm:
                continue
            for e in evals:
                seeds = sorted(s for (a, s) in runs if a == arm and (ref, s) in runs
                               and e in runs[(arm, s)]["final_eval"]
                               and e in runs[(ref, s)]["final_eval"])
                if not seeds:
                    continue
                diffs = [runs[(arm, s)]["final_eval"][e] - runs[(ref, s)]["final_eval"][e]
                         for s in seeds]
                docs_a = [_load_docs(out, runs[(arm, s)], e) for s in seeds]
                docs_r = [_load_docs(out, runs[(ref, s)], e) for s in seeds]
                delta = tokens = None
                if all(d is not None for d in docs_a + docs_r):
                    tokens = docs_a[0][:, 1]
                    if all(np.array_equal(d[:, 1], tokens) for d in docs_a + docs_r):
                        delta = np.mean([a[:, 0] - r[:, 0] for a, r in
                                         zip(docs_a, docs_r, strict=True)], axis=0)
                    else:
                        tokens = None
                st = paired_effect(diffs, delta, tokens, alpha, power)
                effects.append({"arm": arm, "against": ref, "kind": ref_kind, "eval": e,
                                "diff": st["effect"], "control": is_control(arms[arm])
                                and ref_kind == "parent", **st})
    adjusted = holm([ef["p"] for ef in effects])
    for ef, p_adj in zip(effects, adjusted, strict=True):
        ef["p_holm"] = p_adj
        ef["significant"] = bool(not math.isnan(p_adj) and p_adj < alpha)
        ef["exceeds_noise"] = ef["significant"]
    controls = []
    for ef in effects:
        if ef["control"]:
            lo = ef["ci"][0] if ef["ci"] else None
            # The control is declared before the run with a known direction: its check is
            # its own 95% interval, not corrected for the table's exploratory comparisons
            # (whose number would otherwise decide whether a fixed harm is "seen").
            controls.append({"arm": ef["arm"], "against": ef["against"], "eval": ef["eval"],
                             "effect": ef["diff"], "ci": ef["ci"], "p_holm": ef["p_holm"],
                             "detected": bool(lo is not None and lo > 0)})
    reps = {a: repetition(info, budget) for a, info in arms.items()}
    warnings = [f"arm {a!r} repeats its data {r['repeats']:.1f} times (more than "
                f"{REPEAT_WARN:g}: beyond that, repeated tokens are worth much less than new "
                "ones, Muennighoff et al. 2023)" for a, r in reps.items()
                if r["repeats"] > REPEAT_WARN]
    if pairing["unpaired_seeds"]:
        warnings.append("seeds " + ", ".join(map(str, pairing["unpaired_seeds"]))
                        + " start from different weights in different arms: not paired")
    return {"stats": stats, "effects": effects, "baseline": baseline, "evals": evals,
            "comparisons": len([e for e in effects if not math.isnan(e["p"])]),
            "alpha": alpha, "power": power, "controls": controls, "repetition": reps,
            "pairing": pairing, "warnings": warnings}


def _ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def render_markdown(record: dict[str, Any], summary: dict[str, Any]) -> str:
    """The report as Markdown: arms, repetition, effects with their noise and power, the
    planted control's verdict, the plot and the samples."""
    evals, stats = summary["evals"], summary["stats"]
    arms = {a: record["arms"][a] for a in record.get("arm_order", record["arms"])}
    ev_info = record.get("eval", {})
    lines = [f"# Ablation `{record['name']}`", "",
             f"Every arm trained on {record['budget_tokens']:,} tokens per seed, in epochs over "
             "its documents; final loss on the **whole** of each eval stream (mean ± standard "
             "deviation over seeds, n seeds).", ""]
    if any(ev_info.get(e, {}).get("documents") for e in evals):
        lines += ["Eval streams: " + "; ".join(
            f"`{e}` {ev_info[e]['documents']:,} documents, {ev_info[e]['tokens']:,} tokens"
            for e in evals if ev_info.get(e, {}).get("documents")) + ".", ""]
    decon = any(info.get("decontamination") for info in arms.values())
    lines += ["| arm | docs kept | " + ("lost to decontamination | " if decon else "")
              + "tokens kept | distinct tokens | repeats | fraction trained | "
              + " | ".join(evals) + " |",
              "|---|---:|" + ("---:|" if decon else "") + "---:|---:|---:|---:|" + "---:|" * len(evals)]
    for arm, info in arms.items():
        cells = []
        for e in evals:
            s = stats[arm].get(e)
            if not s:
                cells.append("-")
            elif s["std"] is None:
                cells.append(f"{s['mean']:.4f} (n=1)")
            else:
                cells.append(f"{s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
        r = summary["repetition"][arm]
        name = f"{arm} (control)" if is_control(info) else arm
        lost = ""
        if decon:
            d = info.get("decontamination") or {}
            lost = (f"{d['documents_removed']:,} of {d['documents_in']:,} | "
                    if "documents_removed" in d else "- | ")
        lines.append(f"| {name} | {info['documents_kept']:,} | {lost}{info['tokens_kept']:,} | "
                     f"{r['distinct_tokens']:,} | {r['repeats']:.2f} | {r['fraction_trained']:.2f} | "
                     + " | ".join(cells) + " |")
    if summary["warnings"]:
        lines += [""] + [f"**Warning:** {w}." for w in summary["warnings"]]
    pairing = summary["pairing"]
    if pairing["checked"] and not pairing["unpaired_seeds"]:
        lines += ["", "Pairing checked: every seed starts from the same weights in every arm "
                  "(same initial-weight digest) and uses the same data-order rule."]
    m = summary["comparisons"]
    lines += ["", "## Effects", "",
              "Effect = paired difference of final loss, arm minus reference (negative = better), "
              "mean over seeds. **Seed CI**: 95% t-interval over the seeds' paired differences "
              "(seed noise). **Doc CI**: 95% percentile interval of a bootstrap over eval "
              f"documents ({BOOTSTRAP_SAMPLES} resamples; evaluation-sample noise). **CI**: both "
              "combined (se = sqrt(se_seed² + se_doc²), Welch-Satterthwaite df). "
              f"**p (Holm)**: two-sided, Holm-corrected over all {m} comparisons of this table. "
              f"**MDE**: smallest effect this design detects with {summary['power']:.0%} power at "
              f"alpha {summary['alpha']} (uncorrected), (t(1-α/2, df) + t(power, df)) × se. "
              "**Bold**: significant after the correction.", "",
              "| arm | against | eval | effect | seed CI | doc CI | CI | p (Holm) | MDE |",
              "|---|---|---|---:|---|---|---|---:|---:|"]
    for ef in summary["effects"]:
        diff = f"{ef['diff']:+.4f}"
        if ef["significant"]:
            diff = f"**{diff}**"
        seed_ci = _ci(ef.get("seed_ci")) if ef["n_seeds"] >= 2 else "n/a (1 seed)"
        lines.append(f"| {ef['arm']} | {ef['against']} ({ef['kind']}) | {ef['eval']} | {diff} | "
                     f"{seed_ci} | {_ci(ef.get('doc_ci'))} | {_ci(ef['ci'])} | "
                     f"{_num(ef['p_holm'], '.3g')} | {_num(ef['mde'])} |")
    if summary["controls"]:
        lines += ["", "## Planted control", ""]
        for c in summary["controls"]:
            verdict = ("**detected**: worse than its parent beyond its 95% interval"
                       if c["detected"] else "**not detected**: the design cannot see this "
                       "planted harm, so it cannot be trusted with effects of this size")
            lines.append(f"- `{c['arm']}` vs `{c['against']}` on {c['eval']}: "
                         f"{c['effect']:+.4f}, CI {_ci(c['ci'])}: {verdict} "
                         f"(p after Holm over all comparisons: {_num(c['p_holm'], '.3g')}).")
        lines += ["", "The control is a pre-declared check with a known direction, judged by "
                  "its own interval; the table's Holm correction is for the exploratory "
                  "comparisons."]
    noise = _noise_lines(summary)
    if noise:
        lines += ["", "## Noise", ""] + noise
    lines += ["", "![validation loss against tokens](ablation.svg)", ""]
    lines += render_samples(record, arms)
    return "\n".join(lines)


def _noise_lines(summary: dict[str, Any]) -> list[str]:
    """Median seed and document standard errors per eval stream."""
    lines = []
    for e in summary["evals"]:
        efs = [ef for ef in summary["effects"] if ef["eval"] == e]
        ss = [ef["se_seed"] for ef in efs if ef.get("se_seed") is not None]
        sd = [ef["se_doc"] for ef in efs if ef.get("se_doc") is not None]
        mdes = [ef["mde"] for ef in efs if ef.get("mde") is not None]
        if not efs:
            continue
        lines.append(f"- `{e}`: median standard error from seeds "
                     f"{_num(float(np.median(ss)) if ss else None)}, from eval documents "
                     f"{_num(float(np.median(sd)) if sd else None)}; MDE "
                     f"{_num(min(mdes) if mdes else None)}-{_num(max(mdes) if mdes else None)}.")
    return lines


def render_samples(record: dict[str, Any], arms: dict[str, Any]) -> list[str]:
    """Markdown lines showing each arm's continuation of the same prompts (its first seed)."""
    by_arm: dict[str, list[dict[str, str]]] = {}
    for run in sorted(record["runs"], key=lambda r: r["seed"]):
        if run.get("samples") and run["arm"] not in by_arm:
            by_arm[run["arm"]] = run["samples"]
    if not by_arm:
        return []
    prompts = next(iter(by_arm.values()))
    lines = ["## Samples", "",
             "Each arm's model (its first seed) continues the same prompts with the same "
             "sampling seed.", ""]
    for i, first in enumerate(prompts):
        lines += [f"### {first['prompt']!r}", ""]
        for arm in arms:
            if arm in by_arm and i < len(by_arm[arm]):
                text = " ".join((first["prompt"] + by_arm[arm][i]["text"]).split())
                lines.append(f"- **{arm}**: " + text.replace("|", "\\|"))
        lines.append("")
    return lines


def render_svg(record: dict[str, Any], evals: list[str]) -> str:
    """Validation loss against training tokens, mean over seeds, one panel per eval stream."""
    w, h, pad = 460, 320, 50
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    chosen = set(record.get("arm_order", record["arms"]))
    for run in record["runs"]:
        if run["arm"] not in chosen:
            continue
        for e in evals:
            for tokens, loss in run["eval_curve"].get(e, []):
                curves.setdefault(e, {}).setdefault(run["arm"], {}).setdefault(tokens, []).append(loss)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(evals)}" height="{h + 30}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{w * len(evals)}" height="{h + 30}" fill="white"/>']
    arms = list(record.get("arm_order", record["arms"]))
    for i, e in enumerate(evals):
        x0 = i * w
        pts = [(t, sum(v) / len(v)) for a in curves.get(e, {}).values() for t, v in a.items()]
        if not pts:
            continue
        tmin, tmax = min(p[0] for p in pts), max(p[0] for p in pts)
        lmin, lmax = min(p[1] for p in pts), max(p[1] for p in pts)
        tmax, lmax = max(tmax, tmin + 1), max(lmax, lmin + 1e-6)

        def sx(t: float, x0: float = x0, tmin: float = tmin, tmax: float = tmax) -> float:
            return x0 + pad + (t - tmin) / (tmax - tmin) * (w - 2 * pad)

        def sy(v: float, lmin: float = lmin, lmax: float = lmax) -> float:
            return h - pad + 10 - (v - lmin) / (lmax - lmin) * (h - 2 * pad)

        parts.append(f'<text x="{x0 + w / 2}" y="16" text-anchor="middle" font-size="13">'
                     f'validation loss: {e}</text>')
        parts.append(f'<line x1="{x0 + pad}" y1="{h - pad + 10}" x2="{x0 + w - pad}" '
                     f'y2="{h - pad + 10}" stroke="black"/>')
        parts.append(f'<line x1="{x0 + pad}" y1="{pad - 10}" x2="{x0 + pad}" '
                     f'y2="{h - pad + 10}" stroke="black"/>')
        for frac in (0, 0.5, 1):
            v = lmin + frac * (lmax - lmin)
            t = tmin + frac * (tmax - tmin)
            parts.append(f'<text x="{x0 + pad - 4}" y="{sy(v) + 4}" text-anchor="end">{v:.3f}</text>')
            parts.append(f'<text x="{sx(t)}" y="{h - pad + 24}" text-anchor="middle">{t / 1e6:.2f}M</text>')
        parts.append(f'<text x="{x0 + w / 2}" y="{h - pad + 38}" text-anchor="middle">training tokens</text>')
        for j, arm in enumerate(arms):
            series = sorted(curves.get(e, {}).get(arm, {}).items())
            if not series:
                continue
            color = COLORS[j % len(COLORS)]
            poly = " ".join(f"{sx(t):.1f},{sy(sum(v) / len(v)):.1f}" for t, v in series)
            parts.append(f'<polyline points="{poly}" fill="none" stroke="{color}" stroke-width="1.6"/>')
            parts.append(f'<text x="{x0 + w - pad - 4}" y="{pad + 12 * j}" text-anchor="end" '
                         f'fill="{color}">{arm}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def write_report(record: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``report.md`` and ``ablation.svg`` into ``out``; return the summary."""
    summary = summarize(record, out)
    (out / "report.md").write_text(render_markdown(record, summary), encoding="utf-8")
    (out / "ablation.svg").write_text(render_svg(record, summary["evals"]), encoding="utf-8")
    return summary


def render_plan(record: dict[str, Any], out: Path, effect: float, alpha: float = ALPHA,
                power: float = POWER) -> str:
    """How many seeds and eval documents an ablation needs to detect ``effect`` (in nats),
    from a finished pilot run in ``out`` (its ``ablation.json`` ``record``), as Markdown.

    Per eval stream it pools the pilot's comparisons: ``sigma_seed^2`` = mean of the per-seed
    paired-difference variances, ``sigma_doc^2`` = mean of ``se_doc^2 * D``. Model: seed
    variance does not change with the eval set; document variance falls as 1/D.
    """
    from pipeline.ablation.stats import design_table

    summary = summarize(record, out, alpha, power)
    lines = [f"# Design for an effect of {effect:g} nats (pilot `{record['name']}`, "
             f"{record['budget_tokens']:,} training tokens per run)", "",
             f"Power {power:.0%}, two-sided alpha {alpha} per comparison (the pilot made "
             f"{summary['comparisons']} comparisons; with a Holm correction over as many, the "
             "first needs alpha / m: read the table at a smaller effect or add seeds).", "",
             "Model: MDE = (t(1-α/2, df) + t(power, df)) × sqrt(σ_seed²/n + σ_doc²/D), "
             "σ_seed² the variance of one seed's paired difference (assumed independent of the "
             "eval set), σ_doc²/D the document-sampling variance (D eval documents), df by "
             "Welch-Satterthwaite.", ""]
    for e in summary["evals"]:
        efs = [ef for ef in summary["effects"] if ef["eval"] == e]
        s2 = [ef["sd_seed"] ** 2 for ef in efs if ef.get("sd_seed") is not None]
        d2 = [ef["se_doc"] ** 2 * ef["n_docs"] for ef in efs if ef.get("se_doc") is not None]
        docs = next((ef["n_docs"] for ef in efs if ef.get("n_docs")), None)
        if not s2 or not d2 or not docs:
            lines += [f"## `{e}`", "", "The pilot needs 2+ seeds and per-document losses "
                      "(runs of this version) to estimate both variances.", ""]
            continue
        sig_s2, sig_d2 = float(np.mean(s2)), float(np.mean(d2))
        tok = record.get("eval", {}).get(e, {}).get("tokens")
        per_doc = tok / docs if tok else None
        lines += [f"## `{e}`", "",
                  f"Pilot: σ_seed = {math.sqrt(sig_s2):.4f} (from {len(s2)} comparisons), "
                  f"σ_doc/√D = {math.sqrt(sig_d2 / docs):.4f} with D = {docs:,} documents.", "",
                  "| seeds | MDE with this eval set | eval documents needed | eval tokens needed |",
                  "|---:|---:|---:|---:|"]
        for row in design_table(sig_s2, sig_d2, docs, effect, alpha, power):
            need = row["docs_needed"]
            lines.append(f"| {row['seeds']} | {row['mde']:.4f} | "
                         + (f"{need:,}" if need else "unreachable: add seeds") + " | "
                         + (f"{int(need * per_doc):,}" if need and per_doc else "-") + " |")
        lines.append("")
    lines += ["What this cannot tell: how the effect itself, or the seed variance, changes "
              "with training tokens or model size (a pilot at one budget measures neither); "
              "run the design at the budget you will report, and check the ranking at a larger "
              "proxy (`benchmarks/ablation_gpu_run.py`)."]
    return "\n".join(lines)
