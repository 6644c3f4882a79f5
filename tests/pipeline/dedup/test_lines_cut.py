"""The native line cut over Arrow buffers (``native_lines.cut_lines``) equals the Python
``remove_lines`` on real text, and ``dedup_lines_v1.apply_table`` equals its ``run``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StepContext, StepStats
from pipeline.dedup import native_lines
from pipeline.dedup.lines import line_hashes, remove_lines

pytestmark = pytest.mark.native("pipeline.dedup._lines")


@pytest.fixture(autouse=True)
def _current_build() -> None:
    if native_lines.available() and not native_lines.can_cut():
        pytest.fail("pipeline.dedup._lines is built from an older _lines.c without cut(): "
                    "rebuild it (make, or setup.py build_ext --inplace)", pytrace=False)

ODD = ["", "\n", "\n\n", "a\n\nb", "  x  \n", "été İ ẞ ß\n\x1c word \u3000", "l1\nl1\n",
       "\u2028keep\u2028 me\nboiler plate\n", "\x85 \xa0 lone\n\nboiler plate", "日本語の行\n行",
       "emoji 🙂 line\nboiler plate\n\n", "Boiler-Plate!!\nfinal words here"]


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> list[str]:
    """500 real articles (wiki_ref) with a planted frequent line, and the odd cases."""
    path = shared_data / "reference" / "wiki_ref.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    out: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            text = json.loads(line)["text"]
            out.append(f"boiler plate\n{text}" if i % 4 == 0 else text)
            if len(out) >= 500:
                break
    return out + ODD


def _frequent(texts: list[str]) -> set[int]:
    """Hashes of every line occurring at least twice across ``texts``."""
    seen: dict[int, int] = {}
    for t in texts:
        for h in line_hashes(t):
            if h is not None:
                seen[h] = seen.get(h, 0) + 1
    return {h for h, c in seen.items() if c >= 2}


def test_space_bitmap_is_str_isspace() -> None:
    bits = np.unpackbits(np.frombuffer(native_lines.space_bitmap(), np.uint8), bitorder="little")
    assert np.flatnonzero(bits).tolist() == [c for c in range(0x110000) if chr(c).isspace()]


@pytest.mark.parametrize(("word_cap", "kind"), [(2**62, pa.string()), (10, pa.string()),
                                                (10, pa.large_string())])
def test_cut_lines_equals_remove_lines(texts: list[str], word_cap: int, kind: pa.DataType
                                       ) -> None:
    frequent = _frequent(texts)
    column = pa.array(texts, kind).slice(3)  # a slice: offsets not starting at 0
    cut = native_lines.cut_lines(column, np.array(sorted(frequent), dtype=np.int64), word_cap)
    cut_rows = 0
    for i, text in enumerate(texts[3:]):
        r = remove_lines(text, frequent)
        got = (cut.text[i].as_py(), int(cut.lines_removed[i]), int(cut.chars_removed[i]),
               int(cut.chars_left[i]), int(cut.words_left[i]))
        assert got == (r.text, r.lines_removed, r.chars_removed, len(r.text.strip()),
                       min(len(r.text.split()), word_cap)), repr(text[:80])
        cut_rows += r.lines_removed > 0
    assert cut_rows > 100
    assert cut.text.type == pa.string()


def test_cut_lines_refuses_nulls() -> None:
    with pytest.raises(ValueError, match="nulls"):
        native_lines.cut_lines(pa.array(["a", None]), np.zeros(0, np.int64))


def _step(frequent: set[int]):
    from pipeline.steps.dedup_lines import LineDedup

    step = LineDedup()
    step._frequent = frozenset(frequent)
    return step


@pytest.mark.parametrize("native", [True, False])
def test_apply_table_equals_run(texts: list[str], native: bool,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.table_step import TableResult
    from pipeline.io.writer import documents_from_table, documents_schema, documents_to_table
    from pipeline.steps.dedup_lines import LineDedup

    if not native:
        monkeypatch.setattr(native_lines, "can_cut", lambda: False)
    frequent = _frequent(texts)
    docs = [Document(f"d{i}", t, url=f"u{i}") for i, t in enumerate(texts)]
    schema = documents_schema(LineDedup.metadata_fields)
    table = documents_to_table(docs, schema)

    removed: list = []
    ctx_run = StepContext(StepStats(), lambda d, s, r: removed.append((d, str(r), r.to_dict())),
                          samples=[])
    kept = list(_step(frequent).run(documents_from_table(table), ctx_run))

    ctx_table = StepContext(StepStats(), samples=[])
    result: TableResult = _step(frequent).apply_table(table, ctx_table)
    keep = np.ones(table.num_rows, bool)
    keep[result.drop_rows] = False
    assert documents_from_table(result.table.filter(pa.array(keep))) == kept
    dropped = documents_from_table(result.table.take(pa.array(result.drop_rows)))
    assert [(d, str(r), r.to_dict()) for d, r in zip(dropped, result.reasons, strict=True)] == \
        removed
    assert ctx_table.stats.counters == ctx_run.stats.counters
    assert [(d.id, s, r) for d, s, r in ctx_table.samples] == \
        [(d.id, s, r) for d, s, r in ctx_run.samples]
    assert removed and ctx_run.samples
