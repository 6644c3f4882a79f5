"""Extraction quality and speed: resiliparse vs trafilatura on trafilatura's evaluation set.

Usage (from the repository root)::

    python benchmarks/extraction_eval.py [--limit N] [--data DIR]

The tarballs in ``<shared>/html/`` are unpacked into a temporary directory (deleted
afterwards). ``evaldata.json`` labels each page with main-content snippets (``with``) and
boilerplate snippets (``without``). Scoring follows trafilatura's own comparison script:
a ``with`` snippet found in the output is a true positive, missing a false negative; a
``without`` snippet found is a false positive, missing a true negative; an empty output
counts every ``with`` as missed and every ``without`` as removed.

Printed per extractor: share of ``with`` kept (recall), share of ``without`` removed,
precision and F1 (= harmonic mean of precision and recall, trafilatura's "f-score"), pages
with empty output, and pages per second of extraction alone, by wall clock and per CPU
second (pages are decoded to ``str`` once beforehand, as the pipeline's reader does; the
CPU figure is the steadier one on a shared machine). Rows:

* ``resiliparse``: ``pipeline.text.extract`` with :data:`RESILIPARSE_OPTIONS`
* ``trafilatura``: ``pipeline.text.extract`` with :data:`TRAFILATURA_OPTIONS`
* ``trafilatura-datatrove``: trafilatura configured as datatrove's ``Trafilatura``
  extractor configures it (``favor_precision=True, include_comments=False,
  deduplicate=True``): the throughput the pipeline has to beat.
* ``resiliparse, step timeout sandbox``: speed only, through
  :class:`pipeline.text.extract.ExtractionSandbox` as ``extract_v1`` runs it by default.

Then every extractor's output is scored again after the C4 *line* rules, which follow
extraction in ``jobs/crawl.yaml``: what matters is the boilerplate left after both.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.text.extract import ExtractionSandbox, decode_html, html_to_text  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARBALLS = ("trafilatura_eval_html.tar.gz", "trafilatura_cache_html.tar.gz")


@dataclass
class Page:
    """One labelled evaluation page, decoded."""

    file: str
    html: str
    with_: list[str]
    without: list[str]


@dataclass
class Score:
    """Snippet counts and timing for one extractor over all pages."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    empty: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    pages: int = 0

    def add(self, page: Page, text: str | None) -> None:
        """Score one page's output against its labels."""
        self.pages += 1
        if not text:
            self.empty += 1
            self.fn += len(page.with_)
            self.tn += len(page.without)
            return
        for snippet in page.with_:
            if snippet in text:
                self.tp += 1
            else:
                self.fn += 1
        for snippet in page.without:
            if snippet in text:
                self.fp += 1
            else:
                self.tn += 1

    @property
    def kept(self) -> float:
        """Share of main-content snippets present in the output (recall)."""
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def removed(self) -> float:
        """Share of boilerplate snippets absent from the output."""
        return self.tn / max(self.tn + self.fp, 1)

    @property
    def precision(self) -> float:
        """Share of found snippets that are main content."""
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.kept
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def pages_per_second(self) -> float:
        """Extraction throughput, wall clock (one process)."""
        return self.pages / self.seconds if self.seconds else 0.0

    @property
    def pages_per_cpu_second(self) -> float:
        """Extraction throughput per CPU second: steadier on a shared machine."""
        return self.pages / self.cpu_seconds if self.cpu_seconds else 0.0


def load_pages(data_dir: Path, tmp: Path, limit: int | None) -> list[Page]:
    """Unpack the tarballs into ``tmp`` and return the labelled pages, decoded."""
    html_dir = data_dir / "html"
    for name in TARBALLS:
        with tarfile.open(html_dir / name) as tar:
            tar.extractall(tmp, filter="data")
    labels = json.loads((tmp / "evaldata.json").read_text(encoding="utf-8"))
    pages = []
    for item in labels.values():
        # trafilatura's comparison script looks in cache/ first, then eval/
        for sub in ("cache", "eval"):
            path = tmp / sub / item["file"]
            if path.is_file():
                html = decode_html(path.read_bytes())
                pages.append(Page(item["file"], html, item["with"], item["without"]))
                break
        else:
            print(f"missing page file: {item['file']}", file=sys.stderr)
        if limit is not None and len(pages) >= limit:
            break
    return pages


def _trafilatura_datatrove(html: str) -> str | None:
    import trafilatura

    return trafilatura.extract(
        html, favor_precision=True, include_comments=False, deduplicate=True
    )


def extractors() -> dict[str, Callable[[str], str | None]]:
    """The extractors compared, by row name."""
    return {
        "resiliparse": lambda html: html_to_text(html, "resiliparse"),
        "trafilatura": lambda html: html_to_text(html, "trafilatura"),
        "trafilatura-datatrove": _trafilatura_datatrove,
    }


def c4_line_rules() -> Callable[[str], str | None] | None:
    """The C4 *line* rules of ``pipeline.text.heuristics.c4`` (document-level drops switched off).

    Run after extraction in the crawl job, they remove much leftover boilerplate (short
    lines, lines without an end mark); scoring their output shows what boilerplate
    survives both. ``None`` if that module is not available.
    """
    try:
        from pipeline.text.heuristics.c4 import C4Options, C4Rules
    except ImportError:
        return None
    rules = C4Rules(
        C4Options(min_num_sentences=None, filter_curly_bracket=False, filter_lorem_ipsum=False)
    )
    return lambda text: rules.apply(text).text


def evaluate(
    pages: list[Page], extract: Callable[[str], str | None]
) -> tuple[Score, list[str | None]]:
    """Run ``extract`` on every page (timed), score the outputs, return both."""
    extract("<html><body><p>warm-up: import the library outside the timing</p></body></html>")
    outputs = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for page in pages:
        outputs.append(extract(page.html))
    score = Score(
        seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start
    )
    for page, text in zip(pages, outputs, strict=True):
        score.add(page, text)
    return score, outputs


def sandbox_speed(pages: list[Page]) -> tuple[float, float]:
    """Pages/s (wall) and pages per CPU second of resiliparse behind the step's timeout sandbox.

    CPU time is this process's plus the extractor child's (counted once it has exited),
    less the CPU of starting and stopping an idle child (interpreter start, imports).
    """

    def cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    cpu_start = cpu()
    idle = ExtractionSandbox("resiliparse", timeout_seconds=10)
    idle.start()
    idle.close()
    startup_cpu = cpu() - cpu_start

    sandbox = ExtractionSandbox("resiliparse", timeout_seconds=10)
    sandbox.start()
    start, cpu_start = time.perf_counter(), cpu()
    for page in pages:
        sandbox.extract(page.html)
    wall = time.perf_counter() - start
    sandbox.close()
    return len(pages) / wall, len(pages) / (cpu() - cpu_start - startup_cpu)


def rescore(pages: list[Page], outputs: list[str | None], post: Callable[[str], str | None]) -> Score:
    """Score ``post`` applied to earlier outputs (no timing)."""
    score = Score()
    for page, text in zip(pages, outputs, strict=True):
        score.add(page, post(text) if text else None)
    return score


def main(argv: list[str] | None = None) -> int:
    """Run every extractor on the evaluation pages and print a side-by-side table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED, help="shared data directory")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pages")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="extraction_eval_") as tmp:
        pages = load_pages(args.data, Path(tmp), args.limit)
    n_with = sum(len(p.with_) for p in pages)
    n_without = sum(len(p.without) for p in pages)
    print(f"{len(pages)} pages, {n_with} main-content snippets, {n_without} boilerplate snippets")
    header = f"{'extractor':<34}{'with kept':>10}{'w/o removed':>12}{'precision':>10}{'F1':>7}{'empty':>7}{'pages/s':>9}{'pages/cpu-s':>13}"
    print(header)
    print("-" * len(header))
    results = {}
    for name, extract in extractors().items():
        s, results[name] = evaluate(pages, extract)
        print(
            f"{name:<34}{s.kept:>10.3f}{s.removed:>12.3f}{s.precision:>10.3f}{s.f1:>7.3f}"
            f"{s.empty:>7d}{s.pages_per_second:>9.1f}{s.pages_per_cpu_second:>13.1f}",
            flush=True,
        )
    wall, per_cpu = sandbox_speed(pages)
    print(f"{'resiliparse, step timeout sandbox':<34}{'(same output)':>46}{wall:>9.1f}{per_cpu:>13.1f}")
    post = c4_line_rules()
    if post is not None:
        print("\nafter the C4 line rules (as in jobs/crawl.yaml; document-level drops off):")
        for name, outputs in results.items():
            s = rescore(pages, outputs, post)
            label = f"{name} + c4 lines"
            print(f"{label:<34}{s.kept:>10.3f}{s.removed:>12.3f}{s.precision:>10.3f}{s.f1:>7.3f}{s.empty:>7d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
