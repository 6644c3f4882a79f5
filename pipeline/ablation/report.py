"""The ablation report: per-arm mean and spread over seeds, effects against the seed noise,
and a plot of validation loss against training tokens (SVG, no plotting library needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

COLORS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#000000"]


def _mean_std(xs: list[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def parent_arm(arm: str, arms: dict[str, Any]) -> str | None:
    """The arm whose steps are the longest proper prefix of ``arm``'s steps, if any."""
    steps = arms[arm]["steps"]
    best, best_len = None, 0
    for other, info in arms.items():
        s = info["steps"]
        if other != arm and len(s) < len(steps) and steps[: len(s)] == s and len(s) > best_len:
            best, best_len = other, len(s)
    return best


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """Return per-arm statistics and per-arm effects against the parent arm and ``raw``.

    An effect is ``mean(arm) - mean(reference)`` with standard error
    ``sqrt(s_a^2/n_a + s_r^2/n_r)``; it *exceeds the seed noise* when its size is more than
    twice that standard error (about a 95% interval) and both arms have 2+ seeds.
    """
    arms = {a: record["arms"][a] for a in record.get("arm_order", record["arms"])}
    evals = list(record["eval"])
    finals: dict[str, dict[str, list[float]]] = {a: {e: [] for e in evals} for a in arms}
    for run in record["runs"]:
        if run.get("final_eval"):
            for e in evals:
                finals[run["arm"]][e].append(run["final_eval"][e])
    stats = {
        a: {e: dict(zip(("mean", "std"), _mean_std(v), strict=True)) | {"n": len(v)}
            for e, v in finals[a].items() if v}
        for a in arms
    }
    baseline = "raw" if "raw" in arms else next(iter(arms))
    effects = []
    for arm in arms:
        parent = parent_arm(arm, arms)
        refs = [("parent", parent)] + ([("raw", baseline)] if baseline != parent else [])
        for ref_kind, ref in refs:
            if ref is None or ref == arm:
                continue
            for e in evals:
                a, r = stats[arm].get(e), stats[ref].get(e)
                if not a or not r:
                    continue
                diff = a["mean"] - r["mean"]
                se = (math.sqrt(a["std"] ** 2 / a["n"] + r["std"] ** 2 / r["n"])
                      if a["std"] is not None and r["std"] is not None else None)
                effects.append({"arm": arm, "against": ref, "kind": ref_kind, "eval": e,
                                "diff": diff, "se": se,
                                "exceeds_noise": bool(se is not None and abs(diff) > 2 * se)})
    return {"stats": stats, "effects": effects, "baseline": baseline, "evals": evals}


def render_markdown(record: dict[str, Any], summary: dict[str, Any]) -> str:
    """The report as Markdown: table of final validation loss, effects, and the plot."""
    evals, stats = summary["evals"], summary["stats"]
    arms = {a: record["arms"][a] for a in record.get("arm_order", record["arms"])}
    lines = [f"# Ablation `{record['name']}`", "",
             f"Every arm trained on {record['budget_tokens']:,} tokens per seed; final "
             "validation loss (mean ± standard deviation over seeds, n seeds).", "",
             "| arm | docs kept | tokens kept | " + " | ".join(evals) + " |",
             "|---|---:|---:|" + "---:|" * len(evals)]
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
        lines.append(f"| {arm} | {info['documents_kept']:,} | {info['tokens_kept']:,} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## Effects", "",
              "Difference in final loss (negative = better) with its standard error; "
              "**bold** where it exceeds twice the standard error of the seed noise.", "",
              "| arm | against | eval | difference | std. error |", "|---|---|---|---:|---:|"]
    for ef in summary["effects"]:
        diff = f"{ef['diff']:+.4f}"
        if ef["exceeds_noise"]:
            diff = f"**{diff}**"
        se = f"{ef['se']:.4f}" if ef["se"] is not None else "n/a (1 seed)"
        lines.append(f"| {ef['arm']} | {ef['against']} ({ef['kind']}) | {ef['eval']} | {diff} | {se} |")
    lines += ["", "![validation loss against tokens](ablation.svg)", ""]
    lines += render_samples(record, arms)
    return "\n".join(lines)


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
    for run in record["runs"]:
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
    summary = summarize(record)
    (out / "report.md").write_text(render_markdown(record, summary), encoding="utf-8")
    (out / "ablation.svg").write_text(render_svg(record, summary["evals"]), encoding="utf-8")
    return summary
