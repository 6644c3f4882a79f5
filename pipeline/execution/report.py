"""Job reporting: ``stats.json``, a readable ``summary.md`` and a ``stats.png`` funnel plot."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.core.step import Step, StepStats
from pipeline.io.atomic import atomic_write_json


def aggregate(
    steps: list[Step], stages: list[tuple[int, int]], records: Iterable[tuple[int, dict[str, Any]]]
) -> tuple[StepStats, list[StepStats]]:
    """Sum the shards' progress records, ``(stage, record)`` pairs consumed one at a time
    (memory does not grow with the shard count), into read stats and per-step stats (job
    order). A job stopped by failed shards has records for its first stages only."""
    read = StepStats()
    per_step = [StepStats() for _ in steps]
    for stage, record in records:
        start = stages[stage][0]
        if stage == 0 and record.get("read"):
            read.merge(StepStats.from_dict(record["read"]))
        for offset, s in enumerate(record.get("steps") or []):
            per_step[start + offset].merge(StepStats.from_dict(s))
    return read, per_step


def write_report(
    out: Path,
    job: Any,
    steps: list[Step],
    stages: list[tuple[int, int]],
    records: Iterable[tuple[int, dict[str, Any]]],
    shards: int,
    failures: list[tuple[str, str]],
    wall_seconds: float,
) -> dict[str, Any]:
    """Write stats.json, summary.md, stats.png and report.html under ``out``; return the stats.

    ``records`` are the finished shards' ``(stage, progress record)`` pairs (see
    :func:`aggregate`), ``shards`` the number of input shards that finished.
    """
    read, per_step = aggregate(steps, stages, records)
    languages: Counter = Counter()
    for s in per_step:
        for key, n in s.counters.items():
            if key.startswith("lang:"):
                languages[key[5:]] += n
    docs_in = read.docs_out
    docs_out = per_step[-1].docs_out if per_step else docs_in
    chars_out = per_step[-1].chars_out if per_step else read.chars_out
    stats = {
        "job": job.name,
        "output": str(out),
        "shards": shards,
        "failed_shards": [{"shard": s, "error": e} for s, e in failures],
        "documents_in": docs_in,
        "documents_out": docs_out,
        "characters_in": read.chars_out,
        "characters_out": chars_out,
        "read": read.to_dict(),
        "steps": [{"name": st.name, **s.to_dict()} for st, s in zip(steps, per_step, strict=True)],
        "languages": dict(languages.most_common()),
        "wall_seconds": round(wall_seconds, 2),
        "docs_per_second": round(docs_in / wall_seconds, 2) if wall_seconds > 0 else None,
        "cpu_seconds_in_steps": round(read.seconds + sum(s.seconds for s in per_step), 2),
    }
    atomic_write_json(stats, out / "stats.json")
    (out / "summary.md").write_text(render_summary(stats), encoding="utf-8")
    plot_funnel(stats, out / "stats.png")
    write_page(out)
    return stats


def write_page(out: Path) -> None:
    """Write ``report.html`` (:mod:`pipeline.execution.report_html`); a failure is logged
    with how to retry, and does not fail the job whose output is already written."""
    from pipeline.execution.report_html import write_html_report

    try:
        write_html_report(out)
    except Exception as e:  # noqa: BLE001 - the job's data is complete; the page is a view
        logging.getLogger("pipeline.execution.report").error(
            "could not write %s (%s: %s); write it later with `pipeline inspect %s`",
            out / "report.html", type(e).__name__, e, out)


def render_summary(stats: dict[str, Any]) -> str:
    """Return a Markdown summary: the per-step funnel and the top removal reasons."""
    lines = [
        f"# Job `{stats['job']}`",
        "",
        f"{stats['documents_in']:,} documents read, {stats['documents_out']:,} kept "
        f"({_pct(stats['documents_out'], stats['documents_in'])}); "
        f"{stats['characters_out']:,} of {stats['characters_in']:,} characters kept. "
        f"Wall time {stats['wall_seconds']:.1f} s ({stats['docs_per_second']} documents/s).",
        "",
        "| step | docs in | docs out | kept | chars out | seconds | top removal or skip reasons |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    read = stats["read"]
    skipped = {
        k: v for k, v in read["counters"].items() if v and k.startswith(("skipped:", "error:"))
    }
    lines.append(
        f"| read | | {read['docs_out']:,} | | {read['chars_out']:,} | {read['seconds']:.1f} | "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items(), key=lambda kv: -kv[1])[:4])
        + " |"
    )
    for s in stats["steps"]:
        top = sorted(s["dropped"].items(), key=lambda kv: -kv[1])[:4]
        lines.append(
            f"| {s['name']} | {s['docs_in']:,} | {s['docs_out']:,} | "
            f"{_pct(s['docs_out'], s['docs_in'])} | {s['chars_out']:,} | {s['seconds']:.1f} | "
            + ", ".join(f"{k} {v:,}" for k, v in top)
            + " |"
        )
    if stats["languages"]:
        top_langs = list(stats["languages"].items())[:10]
        lines += ["", "Languages seen: " + ", ".join(f"{k} {v:,}" for k, v in top_langs)]
    if stats["failed_shards"]:
        lines += ["", "## Failed shards", ""]
        lines += [f"- `{f['shard']}`: {f['error']}" for f in stats["failed_shards"]]
    lines += ["", "![funnel](stats.png)", ""]
    return "\n".join(lines)


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def plot_funnel(stats: dict[str, Any], path: Path) -> None:
    """Plot documents left after each step and the most common removal reasons."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["read"] + [s["name"] for s in stats["steps"]]
    counts = [stats["read"]["docs_out"]] + [s["docs_out"] for s in stats["steps"]]
    reasons: Counter = Counter()
    for s in stats["steps"]:
        for reason, n in s["dropped"].items():
            reasons[f"{s['name']}: {reason}"] += n
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    bars = ax1.bar(range(len(names)), counts, color="#4477aa")
    # the removed count on each bar: a step that removes a few of many stays visible
    ax1.bar_label(bars, [""] + [f"-{a - b:,}" if a > b else "" for a, b
                                in zip(counts, counts[1:], strict=False)], fontsize=8)
    ax1.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax1.set_ylabel("documents remaining")
    ax1.set_title("Documents after each step")
    top = reasons.most_common(12)
    for s in stats["steps"]:  # every step that removed documents shows its main reason
        own = Counter({r: n for r, n in reasons.items() if r.startswith(f"{s['name']}: ")})
        if own and not any(r in own for r, _ in top):
            top.append(own.most_common(1)[0])
    top = sorted(top, key=lambda rn: rn[1])
    ax2.barh([r for r, _ in top], [n for _, n in top], color="#cc6677")
    ax2.set_xlabel("documents removed")
    ax2.set_title("Top removal reasons")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class JobFolderError(ValueError):
    """``pipeline status`` was given a folder that does not exist or holds no job."""


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (a run may be writing)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _step_name(entry: Any) -> str:
    if isinstance(entry, dict) and len(entry) == 1:
        return str(next(iter(entry)))
    return str(entry)


def _stage_steps(job: dict[str, Any], plan: dict[str, Any]) -> list[list[str]]:
    """The step names of every stage: from ``_plan.json``, else split at global steps."""
    if isinstance(plan.get("stage_steps"), list):
        return plan["stage_steps"]
    names = [_step_name(e) for e in job.get("job", {}).get("steps", [])]
    try:  # output folders written before _plan.json named the stages
        from pipeline.core.registry import get_step_class, is_global

        flags = [is_global(get_step_class(n)) for n in names]
    except (KeyError, ImportError):
        return [names]
    stages: list[list[str]] = [[]]
    for name, glob in zip(names, flags, strict=True):
        if glob:
            stages.append([])
        stages[-1].append(name)
    return stages


def _global_state(out: Path, stage: int, started: bool) -> str:
    """What a stage's global step has done: phases with finished units under ``_global``."""
    if started:
        return "done"
    workdir = out / "_global" / f"stage-{stage}"
    if not workdir.is_dir():
        return "not started"
    phases = []
    for done in workdir.glob("*/_done"):
        markers = list(done.glob("*.json"))
        first = min((m.stat().st_mtime for m in markers), default=float("inf"))
        phases.append((first, done.parent.name, len(markers)))
    if not phases:
        n = sum(1 for p in workdir.rglob("*") if p.is_file())
        return f"in progress ({n} files in {workdir.relative_to(out)})"
    listed = ", ".join(f"{name} {n} unit(s)" for _, name, n in sorted(phases))
    return f"in progress (finished so far: {listed})"


def job_status(out: Path) -> str:
    """Return a readable account of a job's output folder: every stage with its steps, the
    shards done and left, the global steps' phases, failed shards and whether it finished.

    Raises :class:`JobFolderError` when ``out`` does not exist or holds no ``_job.json``.
    """
    if not out.is_dir():
        raise JobFolderError(f"{out} does not exist or is not a folder")
    job = _read_json(out / "_job.json")
    if not isinstance(job, dict):
        raise JobFolderError(f"{out} holds no job (no readable _job.json); "
                             "give the output folder of a pipeline run")
    plan = _read_json(out / "_plan.json") or {}
    shards = plan.get("shards") or []
    n_shards = len(shards) or None
    stages = _stage_steps(job, plan)
    lines = [
        f"job {job.get('job', {}).get('name', '?')} in {out}: {len(job.get('files', []))} "
        f"input files, {n_shards or '?'} shards, {len(stages)} stage(s)"
    ]
    for k, names in enumerate(stages):
        records = [r for r in (_read_json(p) for p in
                               sorted((out / "_progress" / f"stage-{k}").glob("*.json")))
                   if isinstance(r, dict)]
        lines.append(f"  stage {k + 1}/{len(stages)} [{', '.join(names) or 'read'}]:")
        if k > 0:
            lines.append(f"    global step {names[0]}: {_global_state(out, k, bool(records))}")
        if not records:
            lines.append("    shards: not started")
            continue
        done = sum(1 for r in records if r.get("done"))
        docs = sum(r.get("records_done", 0) for r in records)
        lines.append(
            f"    shards: {done} of {n_shards or len(records)} done "
            f"({len(records) - done} in progress), {docs:,} documents processed"
        )
        for r in records:
            if not r.get("done"):
                lines.append(f"    in progress: {r.get('shard_id')} ({r.get('records_done', 0):,} "
                             f"docs, {r.get('parts', 0)} parts)")
    stats = _read_json(out / "stats.json")
    failed = stats.get("failed_shards", []) if isinstance(stats, dict) else []
    if failed:
        lines.append(f"  failed shards in the last run that finished ({len(failed)}, "
                     "from stats.json):")
        lines += [f"    {f.get('shard')}: {f.get('error')}" for f in failed]
    lines.append("  complete" if (out / "_SUCCESS").exists()
                 else "  not complete: rerun the job to finish")
    return "\n".join(lines)
