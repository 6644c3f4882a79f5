"""report.html, ``pipeline show`` and ``pipeline inspect`` on a real webmix crawl job's output,
and the measured values the steps record for them."""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli.main import main
from pipeline.core.step import Rejection
from pipeline.execution.inspect import collect, describe
from pipeline.text.heuristics import GopherQuality

_OPS = {"<": operator.lt, ">": operator.gt, ">=": operator.ge}


def _removed_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "removed").rglob("*.parquet")):
        rows += pq.read_table(path, columns=["removed_by", "reason", "metadata_json"]).to_pylist()
    return rows


def test_rejection_is_the_reason_string_with_the_measured_value() -> None:
    text = " ".join(["the"] * 10 + ["1234 5678 9012"] * 20)
    reason = GopherQuality().reject_reason(text)
    assert reason == "gopher_below_alpha_threshold" and isinstance(reason, Rejection)
    assert reason.value < reason.threshold == 0.8
    assert describe(reason.to_dict()) == f"alphabetic words {reason.value:.2f} < 0.80"
    assert describe({"value": 0.7999, "threshold": 0.8, "op": "<", "measure": "x"}) == \
        "x 0.7999 < 0.8000"


def test_removed_documents_carry_what_the_rule_measured(webmix_crawl: Path) -> None:
    rows = _removed_rows(webmix_crawl)
    checked = 0
    for row in rows:
        if row["removed_by"] not in ("gopher_quality_v1", "gopher_repetition_v1", "langid_v2",
                                     "c4_v1"):
            continue
        rej = json.loads(row["metadata_json"])["_rejection"]
        if rej["op"] in _OPS:
            assert _OPS[rej["op"]](rej["value"], rej["threshold"]), (row["reason"], rej)
            checked += 1
    assert checked > 100
    langid = [json.loads(r["metadata_json"]) for r in rows if r["reason"] == "low_language_score"]
    assert langid and all(m["_rejection"]["value"] == round(m["language_score"], 4)
                          for m in langid)


def test_kept_documents_do_not_carry_report_data(webmix_crawl: Path) -> None:
    for path in (webmix_crawl / "data").glob("*.parquet"):
        assert not any(n.startswith("_") for n in pq.read_schema(path).names)
    samples = list((webmix_crawl / "samples").rglob("*.parquet"))
    steps = {s for p in samples for s in pq.read_table(p, columns=["step"]).column(0).to_pylist()}
    assert {"c4_v1", "pii_v1"} <= steps


def test_report_is_one_small_page_without_network(webmix_crawl: Path) -> None:
    page = (webmix_crawl / "report.html").read_text(encoding="utf-8")
    assert len(page.encode()) < 3_000_000
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=|<link[^>]*stylesheet|@import|url\(",
                         page)
    assert "alphabetic words" in page and "<del>" in page and '<mark class="pii"' in page


def test_sampling_is_bounded_and_seeded(webmix_crawl: Path) -> None:
    one = collect(webmix_crawl, k=2, max_files=1)
    assert one.files_read["removed"][0] == 1 and one.files_read["data"][0] == 1
    assert all(len(v) <= 2 for v in one.removed.values())
    again = collect(webmix_crawl, k=2, max_files=1)
    assert [s.id for s in one.kept] == [s.id for s in again.kept]
    other = collect(webmix_crawl, k=2, seed=7)
    assert [s.id for s in other.kept] != [s.id for s in one.kept]


def test_show_prints_samples_with_measured_values(webmix_crawl: Path, capsys) -> None:
    assert main(["show", str(webmix_crawl), "--step", "gopher_quality_v1", "-n", "1"]) == 0
    text = capsys.readouterr().out
    assert "== gopher_quality_v1" in text
    assert re.search(r"alphabetic words 0\.\d\d < 0\.80", text)
    assert "langid_v2" not in text
    assert main(["show", str(webmix_crawl), "--step", "nope_v1"]) == 2
    assert main(["show", str(webmix_crawl / "data")]) == 2


def test_inspect_rewrites_the_page(webmix_crawl: Path, tmp_path: Path) -> None:
    page = webmix_crawl / "report.html"
    before = page.read_text(encoding="utf-8")
    page.unlink()
    assert main(["inspect", str(webmix_crawl)]) == 0
    after = page.read_text(encoding="utf-8")
    strip = re.compile(r"Written by .*?</footer>")  # the footer holds the time taken
    assert strip.sub("", after) == strip.sub("", before)


def test_report_renders_in_a_real_browser(webmix_crawl: Path, chromium, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    dom, errors = chromium(webmix_crawl / "report.html", shot)
    assert errors == []
    assert 'data-ready="1"' in dom  # the inline script ran to its end
    assert dom.count("<svg") >= 3 and "<rect" in dom  # funnel, reasons, a histogram
    assert re.search(r'class="badge measured">alphabetic words 0\.\d\d &lt; 0\.80<', dom)
    assert shot.stat().st_size > 50_000


def test_browser_check_fails_on_a_script_error(webmix_crawl: Path, chromium,
                                               tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    page = (webmix_crawl / "report.html").read_text(encoding="utf-8")
    broken.write_text(page.replace("</body>", "<script>notAFunction();</script></body>"),
                      encoding="utf-8")
    _, errors = chromium(broken)
    assert errors and "notAFunction" in errors[0]


@pytest.mark.parametrize("reason", ["c4_too_few_sentences", "gopher_short_doc"])
def test_show_filters_by_reason(webmix_crawl: Path, capsys, reason: str) -> None:
    assert main(["show", str(webmix_crawl), "--reason", reason, "-n", "2"]) == 0
    text = capsys.readouterr().out
    assert f"-- {reason}:" in text
    assert len(re.findall(r"^-- (?!changed)", text, re.M)) == 1


def test_dedup_report_shows_clusters_and_removed_lines(webmix_dedup: Path) -> None:
    ins = collect(webmix_dedup)
    assert ins.clusters and all(c.survivor is not None for c in ins.clusters)
    sizes = [c.size for c in ins.clusters]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2
    # the similarity the step recorded: at the step's threshold, or chained to a member that is
    sims = [sim for c in ins.clusters for _, sim in c.members]
    assert all(sim is not None for sim in sims) and max(sims) >= 0.8
    near = ins.removed[("dedup_minhash_v1", "near_duplicate")]
    assert all(0 < s.rejection["value"] <= 1 and "to the kept document" in s.measured
               for s in near)
    lines = ins.changes["dedup_lines_v1"]
    assert lines and all(any(rule == "frequent" for _, rule in c.record["lines"]) for c in lines)
    page = (webmix_dedup / "report.html").read_text(encoding="utf-8")
    assert "Largest near-duplicate clusters" in page and "to the kept one" in page
