"""``whitespace_v1`` on real pandoc text: table padding collapses, words and lines stay."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from pipeline.core.document import Document
from pipeline.core.registry import get_step_class
from pipeline.core.step import StepContext, StepStats


def _run(text: str, **options) -> tuple[str, StepStats]:
    cls = get_step_class("whitespace_v1")
    stats = StepStats()
    [doc] = cls(cls.Options(**options)).run([Document("d", text)], StepContext(stats))
    return doc.text, stats


def test_runs_collapse_and_lines_are_kept() -> None:
    text, stats = _run("| Japan      | 2016 |\t\t[10] |\n  indented  line  \n\nnext")
    assert text == "| Japan | 2016 | [10] |\nindented line\n\nnext"
    assert stats.counters["whitespace_docs_changed"] == 1
    text, _ = _run("  a  b  \n  c", strip_lines=False)
    assert text == " a b \n c"
    text, _ = _run("a  \r\n  b\f\vc")  # CRLF kept, its trailing spaces removed
    assert text == "a\r\nb c"
    kept, stats = _run("10\xa0km")  # no-break spaces stay, as HTML extraction keeps them
    assert kept == "10\xa0km" and not stats.counters
    unchanged, stats = _run("plain text\nwith lines")
    assert unchanged == "plain text\nwith lines" and not stats.counters


def test_wiki_val_tables_lose_their_padding_only(shared_data: Path) -> None:
    with gzip.open(shared_data / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f][:100]
    padded = [t for t in texts if "    " in t]
    assert padded, "wiki_val has ASCII tables with padded cells"
    for t in padded:
        out, _ = _run(t)
        assert "  " not in out and "\t" not in out
        assert out.split() == t.split()  # the same words in the same order
        assert out.count("\n") == t.count("\n")
