"""``report.html``: one static page showing what a crawl job kept, removed, changed and why.

:func:`render` turns an :class:`~pipeline.execution.inspect.Inspection` into HTML with its
styles, charts (hand-written SVG) and a few lines of script inline: it opens from disk in
any browser, with no server and no network. :func:`write_html_report` samples a job's
output folder and writes the page atomically.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.execution.inspect import (
    ChangeSample,
    Cluster,
    Inspection,
    Sample,
    Score,
    collect,
)
from pipeline.io.atomic import atomic_write_text

KEPT, REMOVED, ACCENT = "#3b75af", "#d0505f", "#2a9d8f"
#: reasons per step shown with document samples; the others are listed with their counts
MAX_REASONS_SHOWN = 15


def esc(x: Any) -> str:
    """Return ``x`` as HTML-escaped text."""
    return html.escape(str(x), quote=True)


def _anchor(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts)).strip("-")


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "–"


# ---------------------------------------------------------------------------- charts


def funnel_svg(stats: dict[str, Any]) -> str:
    """Return an SVG bar chart of the documents left after reading and after each step."""
    names = ["read"] + [s["name"] for s in stats["steps"]]
    counts = [stats["read"]["docs_out"]] + [s["docs_out"] for s in stats["steps"]]
    w, h, left, bottom, top = 560, 250, 56, 70, 18
    n = max(1, len(names))
    slot = (w - left - 10) / n
    peak = max(counts + [1])
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="documents after each step">']
    for frac in (0, 0.5, 1):
        y = top + (h - top - bottom) * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{w - 6}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                     f'{int(peak * frac):,}</text>')
    for i, (name, c) in enumerate(zip(names, counts, strict=True)):
        bh = (h - top - bottom) * c / peak
        x = left + i * slot + slot * 0.15
        y = h - bottom - bh
        pct = _pct(c, counts[0])
        parts.append(
            f'<a href="#{_anchor("step", name)}"><rect x="{x:.1f}" y="{y:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{bh:.1f}" fill="{KEPT}" rx="2">'
            f'<title>{esc(name)}: {c:,} documents ({pct} of read)</title></rect></a>'
            f'<text x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" class="val" '
            f'text-anchor="middle">{c:,}</text>'
            f'<text transform="translate({x + slot * 0.35:.1f},{h - bottom + 12}) rotate(30)" '
            f'class="tick">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def reasons_svg(stats: dict[str, Any], top: int = 14) -> str:
    """Return an SVG horizontal bar chart of the most common removal reasons."""
    reasons: Counter = Counter()
    for s in stats["steps"]:
        for reason, n in s["dropped"].items():
            reasons[(s["name"], reason)] += n
    rows = reasons.most_common(top)
    for s in stats["steps"]:  # every step that removed documents shows its main reason
        own = Counter({k: n for k, n in reasons.items() if k[0] == s["name"]})
        if own and not any(k in own for k, _ in rows):
            rows.append(own.most_common(1)[0])
    rows.sort(key=lambda kn: -kn[1])
    w, row, left = 560, 19, 300
    h = max(40, row * len(rows) + 12)
    peak = max([n for _, n in rows] + [1])
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="top removal reasons">']
    for i, ((step, reason), n) in enumerate(rows):
        y = 6 + i * row
        bw = (w - left - 60) * n / peak
        parts.append(
            f'<a href="#{_anchor("reason", step, reason)}">'
            f'<text x="{left - 6}" y="{y + 13}" class="tick" text-anchor="end">'
            f'{esc(step)}: {esc(reason)}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{bw:.1f}" height="{row - 5}" fill="{REMOVED}" '
            f'rx="2"><title>{esc(step)}: {esc(reason)}: {n:,} documents</title></rect></a>'
            f'<text x="{left + bw + 4:.1f}" y="{y + 13}" class="val">{n:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(score: Score, bins: int = 40) -> str:
    """Return an SVG histogram of a score, kept and removed documents in two colours, with
    the threshold drawn (log scale for positive scores spanning over two decades)."""
    values = np.concatenate([score.kept, score.removed])
    lo, hi = float(values.min()), float(values.max())
    log = lo > 0 and hi / lo > 100
    f = np.log10 if log else (lambda x: x)
    a, b = float(f(lo)), float(f(hi))
    if b <= a:
        a, b = a - 0.5, b + 0.5
    edges = np.linspace(a, b, bins + 1)
    kept, _ = np.histogram(f(score.kept), edges) if len(score.kept) else (np.zeros(bins), 0)
    rem, _ = np.histogram(f(score.removed), edges) if len(score.removed) else (np.zeros(bins), 0)
    w, h, left, bottom, top = 520, 210, 46, 34, 24
    pw, ph = w - left - 12, h - top - bottom
    peak = max(int(kept.max(initial=0)), int(rem.max(initial=0)), 1)
    bw = pw / bins

    def x_of(v: float) -> float:
        return left + pw * (v - a) / (b - a)

    parts = [f'<svg class="chart hist" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="histogram of {esc(score.name)}">',
             f'<line x1="{left}" x2="{w - 12}" y1="{top + ph}" y2="{top + ph}" class="axis"/>']
    for i in range(bins):
        for counts, colour, dx in ((kept, KEPT, 0.0), (rem, REMOVED, 0.5)):
            c = int(counts[i])
            if not c:
                continue
            bh = ph * c / peak
            x0, x1 = edges[i], edges[i + 1]
            label = (f"{10 ** x0:,.1f}–{10 ** x1:,.1f}" if log else f"{x0:.3g}–{x1:.3g}")
            side = "kept" if colour == KEPT else "removed"
            parts.append(f'<rect x="{left + i * bw + dx * bw:.1f}" y="{top + ph - bh:.1f}" '
                         f'width="{bw / 2:.1f}" height="{bh:.1f}" fill="{colour}">'
                         f'<title>{label}: {c:,} {side}</title></rect>')
    for t in np.linspace(a, b, 5):
        label = f"{10 ** t:,.0f}" if log else f"{t:.3g}"
        parts.append(f'<text x="{x_of(t):.1f}" y="{h - bottom + 14}" class="tick" '
                     f'text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + 4}" class="tick" text-anchor="end">{peak:,}'
                 f'</text><text x="{left - 6}" y="{top + ph}" class="tick" text-anchor="end">0'
                 f'</text>')
    if score.threshold is not None and (not log or score.threshold > 0):
        t = float(f(score.threshold))
        if a <= t <= b:
            x = x_of(t)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{top + ph}" '
                         f'class="threshold"/><text x="{x + 4:.1f}" y="{top - 10}" '
                         f'class="thr">threshold {score.threshold:g}</text>')
    parts.append(f'<text x="{w - 12}" y="{h - 4}" class="tick" text-anchor="end">'
                 f'{esc(score.name)}{" (log scale)" if log else ""}</text></svg>')
    return "".join(parts)


# ---------------------------------------------------------------------------- documents


def _card(s: Sample, score_names: list[str] | None = None, kind: str = "removed") -> str:
    url = (f'<a class="url" href="{esc(s.url)}" rel="noopener noreferrer">{esc(s.url)}</a>'
           if s.url else f'<span class="url">{esc(s.id)}</span>')
    badges = []
    if s.language:
        badges.append(f'<span class="badge lang">{esc(s.language)}</span>')
    if s.measured:
        badges.append(f'<span class="badge measured">{esc(s.measured)}</span>')
    for name in score_names or []:
        if name in s.scores:
            badges.append(f'<span class="badge score">{esc(name)} {s.scores[name]:.3g}</span>')
    return (f'<div class="doc {kind}"><div class="meta">{url}{"".join(badges)}</div>'
            f'<pre>{esc(s.head) or "<em>(empty)</em>"}</pre></div>')


def _change_card(c: ChangeSample) -> str:
    url = esc(c.url or c.id)
    rec = c.record
    if "lines" in rec:
        rows = []
        for line, rule in rec["lines"]:
            if rule:
                rows.append(f'<div class="line gone"><del>{esc(line)}</del>'
                            f'<span class="rule">{esc(rule)}</span></div>')
            else:
                rows.append(f'<div class="line">{esc(line)}</div>')
        removed = sum(1 for _, r in rec["lines"] if r)
        more = rec.get("lines_total", len(rec["lines"])) - len(rec["lines"])
        tail = f'<div class="more">… {more} more lines</div>' if more > 0 else ""
        body = f'<div class="lines">{"".join(rows)}{tail}</div>'
        summary = f"{removed} of {len(rec['lines'])} lines removed"
    else:
        text, pos, out = rec.get("text", ""), 0, []
        for start, end, kind in rec.get("spans", []):
            out.append(esc(text[pos:start]))
            out.append(f'<mark class="pii" title="{esc(kind)} masked">{esc(text[start:end])}'
                       f'</mark>')
            pos = end
        out.append(esc(text[pos:]))
        body = f'<pre class="masked">{"".join(out)}</pre>'
        summary = f"{len(rec.get('spans', []))} spans masked"
    return (f'<div class="doc change"><div class="meta"><span class="url">{url}</span>'
            f'<span class="badge">{esc(summary)}</span></div>{body}</div>')


def _cluster_block(c: Cluster) -> str:
    cards = []
    if c.survivor is not None:
        cards.append(_card(c.survivor, kind="kept").replace(
            '<div class="meta">', '<div class="meta"><span class="badge keptb">kept</span>', 1))
    else:
        cards.append('<div class="doc kept"><em>kept document not in the files read</em></div>')
    for sample, sim in c.members:
        sample = dataclasses.replace(sample, rejection=None)  # the size is in the heading
        label = f"Jaccard {sim:.2f} to the kept one" if sim is not None else "Jaccard: –"
        cards.append(_card(sample, kind="removed").replace(
            '<div class="meta">', f'<div class="meta"><span class="badge measured">{label}'
                                  '</span>', 1))
    return (f'<div class="cluster"><h4>cluster of {c.size:,} documents</h4>'
            f'<div class="row">{"".join(cards)}</div></div>')


# ---------------------------------------------------------------------------- page


def _step_section(step: dict[str, Any], ins: Inspection, score_names: list[str]) -> str:
    name = step["name"]
    stat = next((s for s in ins.stats["steps"] if s["name"] == name), None)
    if stat is None:
        return ""
    removed_n = stat["docs_in"] - stat["docs_out"]
    opts = ", ".join(f"{k}: {v}" for k, v in (step.get("options") or {}).items())
    head = (f'<section class="step" id="{_anchor("step", name)}"><h2>{esc(name)}</h2>'
            f'<p class="sub">{stat["docs_in"]:,} in → {stat["docs_out"]:,} kept, '
            f'{removed_n:,} removed ({_pct(removed_n, stat["docs_in"])})'
            f'{" · options: " + esc(opts) if opts else ""}</p>')
    reasons = sorted(stat["dropped"].items(), key=lambda kv: -kv[1])
    blocks = []
    for reason, n in reasons[:MAX_REASONS_SHOWN]:
        samples = ins.removed.get((name, reason), [])
        cards = "".join(_card(s) for s in samples) or (
            '<p class="none">no removed document of this reason in the files read '
            '(keep_removed off, or sampled out)</p>')
        blocks.append(
            f'<details class="reason" id="{_anchor("reason", name, reason)}" '
            f'data-key="{esc(name)} {esc(reason)}" open><summary><b>{esc(reason)}</b> '
            f'<span class="count">{n:,} documents ({_pct(n, stat["docs_in"])} of the step\'s '
            f'input) · {len(samples)} shown</span></summary>{cards}</details>')
    rest = reasons[MAX_REASONS_SHOWN:]
    if rest:
        blocks.append('<p class="rest">Also removed: ' + ", ".join(
            f"{esc(r)} {n:,}" for r, n in rest) + "</p>")
    wide = []  # full-width parts below the two columns
    changes = ins.changes.get(name, [])
    if changes:
        wide.append(f'<h3>What {esc(name)} changed in documents it kept (removed lines struck '
                    f'through, masked spans highlighted)</h3><div class="grid">'
                    + "".join(_change_card(c) for c in changes) + "</div>")
    if name.startswith("dedup_minhash") and ins.clusters:
        wide.append("<h3>Largest near-duplicate clusters: the kept document, then removed "
                    "members</h3>" + "".join(_cluster_block(c) for c in ins.clusters))
    if not blocks:
        blocks.append('<p class="none">This step removed no document.</p>')
    mine = [s for s in score_names if _score_step(ins, s) == name]
    kept = "".join(_card(s, mine, kind="kept") for s in ins.kept)
    return (head + f'<div class="cols"><div class="left">{"".join(blocks)}</div>'
            f'<div class="right"><h3>Kept by the job (same sample for every step)</h3>{kept}'
            f'</div></div>{"".join(wide)}</section>')


def _score_step(ins: Inspection, name: str) -> str:
    return next((s.step for s in ins.scores if s.name == name), "")


CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,
sans-serif;color:#1d2430;background:#f4f6f9}header{background:#1f2b3c;color:#fff;padding:18px
28px}header h1{margin:0 0 4px;font-size:21px}header p{margin:2px 0;color:#c9d3e0}nav{position:
sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #dde3ea;padding:8px 28px;display:
flex;gap:14px;flex-wrap:wrap;align-items:center}nav a{color:#3b75af;text-decoration:none}nav
input{margin-left:auto;padding:4px 8px;border:1px solid #c5cfdb;border-radius:4px;width:220px}
main{padding:10px 28px 40px}.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(
440px,1fr));gap:16px}.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:
12px 16px}.card h3{margin:0 0 6px;font-size:15px}.chart{width:100%;height:auto}.chart .tick{
font-size:11px;fill:#556}.chart .val{font-size:11px;fill:#223}.chart .grid{stroke:#e5e9ef}.chart
.axis{stroke:#99a}.threshold{stroke:#111;stroke-dasharray:4 3;stroke-width:1.5}.thr{font-size:
11px;font-weight:600}.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;
border-radius:2px}section.step{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:
8px 18px 14px;margin:18px 0}section.step h2{margin:8px 0 2px;font-size:18px}.sub{margin:0 0 8px;
color:#556}.cols{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:18px}.right{
border-left:3px solid #e3ecf6;padding-left:14px}.right h3,.left h3{font-size:14px;margin:10px 0 6px;
color:#334}details.reason{margin:8px 0;border-left:3px solid #f0c9ce;padding-left:10px}details.
reason summary{cursor:pointer;padding:3px 0}.count{color:#667;font-size:12.5px}.doc{border:1px
solid #e2e6ec;border-radius:6px;margin:6px 0;background:#fcfcfd}.doc.kept{border-color:#cfe0f1}
.doc.removed{border-color:#f1d3d7}.meta{display:flex;flex-wrap:wrap;gap:6px;align-items:center;
padding:5px 8px;border-bottom:1px solid #eef0f3;font-size:12.5px}.url{color:#3b75af;word-break:
break-all;max-width:100%}.badge{background:#eef1f5;border-radius:10px;padding:1px 8px;font-size:
12px;overflow-wrap:anywhere}.badge.measured{background:#fde8ea;color:#9b1c2c;font-weight:600}.badge.
score{background:#e6f0fa;color:#24527f}.badge.keptb{background:#dff3ea;color:#17694a;font-weight:
600}.badge.lang{background:#f1eefb;color:#4b3a8f}pre{margin:0;padding:7px 9px;white-space:
pre-wrap;word-break:break-word;font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace;max-height:
12.5em;overflow:auto}.lines{padding:6px 9px;font:12.5px/1.45 ui-monospace,Menlo,Consolas,
monospace;max-height:20em;overflow:auto}.line.gone{color:#a33}.line del{text-decoration-color:
#c33}.rule{margin-left:8px;font:11px system-ui;background:#fde8ea;color:#9b1c2c;border-radius:8px;
padding:0 6px}mark.pii{background:#ffe58a;border-radius:3px;padding:0 2px}.cluster .row{display:
grid;grid-auto-flow:column;grid-auto-columns:minmax(250px,1fr);gap:8px;overflow-x:auto}.grid{display:grid;
grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:0 12px}.cluster h4{margin:10px 0 2px;
font-size:13px}.none,.rest,.more{color:#778;font-size:12.5px}.hidden{display:none}footer{color:
#778;font-size:12px;padding:0 28px 24px}
"""

SCRIPT = """
(function(){
  var box=document.getElementById('filter');
  box.addEventListener('input',function(){
    var q=box.value.toLowerCase().trim();
    document.querySelectorAll('details.reason').forEach(function(d){
      var hit=!q||d.getAttribute('data-key').toLowerCase().indexOf(q)>=0;
      d.classList.toggle('hidden',!hit);
    });
  });
  document.getElementById('expand').addEventListener('click',function(){
    var all=document.querySelectorAll('details.reason');
    var open=Array.prototype.some.call(all,function(d){return !d.open;});
    all.forEach(function(d){d.open=open;});
  });
  document.body.setAttribute('data-ready','1');
})();
"""


def render(ins: Inspection, seconds: float | None = None) -> str:
    """Return the report page for ``ins`` as one self-contained HTML string."""
    st = ins.stats
    score_names = [s.name for s in ins.scores]
    hists = "".join(
        f'<div class="card"><h3>{esc(s.name)} <span class="count">written by {esc(s.step)}; '
        f'{len(s.kept):,} kept, {len(s.removed):,} removed (sampled)</span></h3>'
        f'{histogram_svg(s)}<div class="legend count"><span style="background:{KEPT}"></span>'
        f'kept<span style="background:{REMOVED}"></span>removed by {esc(s.step)}'
        f'{"" if s.threshold is not None else " · no threshold recorded"}</div></div>'
        for s in ins.scores)
    steps = "".join(_step_section(step, ins, score_names) for step in ins.steps)
    nav = "".join(f'<a href="#{_anchor("step", s["name"])}">{esc(s["name"])}</a>'
                  for s in ins.steps)
    read = ", ".join(f"{folder}: {a} of {b} files" for folder, (a, b) in ins.files_read.items())
    written = f" in {seconds:.2f} s" if seconds is not None else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>Report: {esc(st["job"])}</title><style>{CSS}</style></head><body>'
        f'<header><h1>Job <code>{esc(st["job"])}</code></h1>'
        f'<p>{st["documents_in"]:,} documents read, {st["documents_out"]:,} kept '
        f'({_pct(st["documents_out"], st["documents_in"])}); {st["characters_out"]:,} of '
        f'{st["characters_in"]:,} characters kept; wall time {st["wall_seconds"]:.1f} s.</p>'
        f'<p>Samples are seeded (seed {ins.seed}): {esc(read)}. Values next to removed '
        'documents are what the step measured when it removed them.</p></header>'
        f'<nav><a href="#overview">overview</a>{nav}<button id="expand" type="button">'
        'collapse / expand all</button><input id="filter" type="search" '
        'placeholder="filter reasons (e.g. gopher, language:)"></nav><main>'
        '<h2 id="overview">Overview</h2><div class="cards">'
        f'<div class="card"><h3>Documents after each step</h3>{funnel_svg(st)}</div>'
        f'<div class="card"><h3>Top removal reasons</h3>{reasons_svg(st)}</div>'
        f'{hists}</div>{steps}</main>'
        f'<footer>Written by <code>pipeline inspect</code>{written} from {esc(ins.out)}.'
        f'</footer><script>{SCRIPT}</script></body></html>')


def write_html_report(out: str | os.PathLike, seed: int = 0) -> Path:
    """Sample the job output folder ``out`` and write ``out/report.html``; return its path.

    Raises :class:`~pipeline.execution.inspect.JobOutputError` when ``out`` holds no
    finished job (no ``stats.json``).
    """
    t0 = time.perf_counter()
    ins = collect(out, seed=seed)
    page = render(ins, time.perf_counter() - t0)
    path = Path(out) / "report.html"
    atomic_write_text(page, path)
    return path


__all__ = ["funnel_svg", "histogram_svg", "reasons_svg", "render", "write_html_report"]
