"""The Read step on real data: every crawl archive in shared/data/cc and webmix, charsets
with real legacy-encoded text, JSONL and Parquet splits. Damaged input is tested in
test_readers_bad_input.py."""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from pydantic import ValidationError
from warcio.archiveiterator import ArchiveIterator as WarcioIterator

from pipeline.core.document import Document
from pipeline.core.step import StepStats
from pipeline.io.readers import ReadOptions, detect_format, plan_splits, read_shard
from pipeline.io.readers.charset import decode_html, meta_charset, normalize_charset
from pipeline.io.readers.http import dechunk, decode_content, parse_content_type

# name -> (response/conversion records or JSONL lines, documents with html_only=False,
#          documents with html_only=True).
# The record counts were checked with two independent readers: warcio's ArchiveIterator
# (arc2warc for the ARC) and FastWARC's, counting WARC-Type response (conversion for WET)
# records; both agree for every file. Documents are fewer than records where the payload
# is empty (HTTP 301/302 and empty 200s: 7 Heritrix, 18 pywb, 1 CC-2014) or, with
# html_only, not HTML. The Heritrix 2008 WARC and ARC hold the same 299 captures.
# test_warc_matches_warcio re-derives ids, URLs and payloads with warcio on every run.
CC_COUNTS = {
    "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc": (4, 3, 3),
    "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat": (0, 0, 0),
    "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wet": (3, 3, 3),
    "aut_heritrix2008_example.arc.gz": (299, 292, 135),
    "aut_heritrix2008_example.warc.gz": (299, 292, 135),
    "dolma_ccnet_cc_en_head-0091.jsonl": (10, 10, 10),
    "dolma_ccnet_cc_en_head-0174.jsonl": (10, 10, 10),
    "dolma_wget2024_sample-0000.warc.gz": (22, 22, 22),
    "dolma_wget2024_sample-0001.warc.gz": (15, 15, 15),
    "pywb_iana2014.warc.gz": (48, 30, 18),
    "resiliparse_CC-MAIN-2020-34_sample.warc.gz": (16, 16, 16),
    "resiliparse_clueweb09-quirk.warc.gz": (29, 29, 29),
    "whirlwind_CC-MAIN-2024-22_whirlwind.warc.gz": (1, 1, 1),
    "whirlwind_CC-MAIN-2024-22_whirlwind.warc.wat.gz": (0, 0, 0),
    "whirlwind_CC-MAIN-2024-22_whirlwind.warc.wet.gz": (1, 1, 1),
}
# webmix shard -> (responses, documents html_only=False, documents html_only=True);
# 1,141 payloads are text/plain (spam e-mails), 5 are empty.
WEBMIX_COUNTS = {
    "webmix-00000.warc.gz": (702, 701, 567),
    "webmix-00001.warc.gz": (702, 702, 556),
    "webmix-00002.warc.gz": (702, 700, 549),
    "webmix-00003.warc.gz": (702, 701, 561),
    "webmix-00004.warc.gz": (701, 701, 567),
    "webmix-00005.warc.gz": (701, 701, 547),
    "webmix-00006.warc.gz": (701, 701, 554),
    "webmix-00007.warc.gz": (701, 700, 565),
}


def read(path: Path | str, **options: object) -> tuple[list[Document], StepStats]:
    """All documents of a file (one split) and the stats counted while reading it."""
    stats = StepStats()
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    fmt = opts.format or detect_format(str(path))
    return list(read_shard(str(path), fmt, 0, 1, opts, stats)), stats


def errors(stats: StepStats) -> dict[str, int]:
    return {k: v for k, v in stats.counters.items() if k.startswith("error:")}


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.warc", "warc"),
        ("a.warc.gz", "warc"),
        ("A.WARC.GZ", "warc"),
        ("a.arc", "arc"),
        ("a.arc.gz", "arc"),
        ("a.wet", "wet"),
        ("a.wet.gz", "wet"),
        ("CC-MAIN-x.warc.wet.gz", "wet"),
        ("CC-MAIN-x.warc.wet", "wet"),
        ("CC-MAIN-x.warc.wat.gz", "warc"),
        ("CC-MAIN-x.warc.wat", "warc"),
        ("a.wat", "warc"),
        ("/d/x.jsonl", "jsonl"),
        ("x.jsonl.gz", "jsonl"),
        ("x.jsonl.zst", "jsonl"),
        ("x.json.gz", "jsonl"),
        ("s3://b/x.parquet", "parquet"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["x.json", "x.txt", "x.gz", "x.warc.bz2", "warc", "x.csv"])
def test_detect_format_refuses_unknown_extensions(name: str) -> None:
    with pytest.raises(ValueError) as info:
        detect_format(f"/data/{name}")
    assert name in str(info.value) and ".warc.gz" in str(info.value)


def test_options_refuse_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        ReadOptions(html_onyl=False)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ReadOptions(format="csv")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ReadOptions(split_bytes=0)


def test_read_shard_refuses_impossible_splits(cc_dir: Path) -> None:
    path = str(cc_dir / "pywb_iana2014.warc.gz")
    with pytest.raises(ValueError):
        read_shard(path, "warc", 0, 2, ReadOptions(), StepStats())
    with pytest.raises(ValueError):
        read_shard(path, "warc", 1, 1, ReadOptions(), StepStats())
    with pytest.raises(ValueError):
        read_shard(path, "html", 0, 1, ReadOptions(), StepStats())


# ------------------------------------------------------------ real archives


def test_every_cc_file_is_listed(cc_dir: Path) -> None:
    assert sorted(os.listdir(cc_dir)) == sorted(CC_COUNTS)


@pytest.mark.parametrize("name", sorted(CC_COUNTS))
def test_cc_file_counts(name: str, cc_dir: Path) -> None:
    records, docs_all, docs_html = CC_COUNTS[name]
    docs, stats = read(cc_dir / name, html_only=False)
    assert (stats.docs_in, len(docs)) == (records, docs_all)
    assert stats.docs_out == len(docs) and stats.chars_out == sum(len(d.text) for d in docs)
    assert errors(stats) == {}
    html_docs, html_stats = read(cc_dir / name)
    assert len(html_docs) == docs_html
    skipped = sum(v for k, v in html_stats.counters.items() if k.startswith("skipped:"))
    non_record = sum(
        html_stats.counters[f"skipped:{t}"]
        for t in ("warcinfo", "request", "metadata", "revisit", "resource", "arc_header")
    )
    assert len(html_docs) + skipped - non_record == records  # every record accounted for
    assert all(d.text and d.source == name for d in docs)
    assert len({d.id for d in docs}) == len(docs)


def test_webmix_counts_and_http_status(webmix_dir: Path) -> None:
    total = 0
    for name, (records, docs_all, docs_html) in WEBMIX_COUNTS.items():
        docs, stats = read(webmix_dir / name, html_only=False)
        assert (stats.docs_in, len(docs)) == (records, docs_all), name
        assert stats.counters["http_status:200"] == records
        html = [d for d in docs if d.media_type == "text/html"]
        assert len(html) == docs_html
        assert {d.media_type for d in docs} == {"text/html", "text/plain"}
        total += stats.docs_in
    assert total == 5612
    docs, stats = read(webmix_dir / "webmix-00000.warc.gz")
    assert len(docs) == 567 and stats.counters["skipped:non_html"] == 134


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(CC_COUNTS) if "warc" in n and "jsonl" not in n] + ["webmix-00003.warc.gz"],
)
def test_warc_matches_warcio(name: str, webmix_dir: Path, cc_dir: Path) -> None:
    """Ids, URLs and texts agree with warcio, an independent WARC reader."""
    path = webmix_dir / name if name.startswith("webmix") else cc_dir / name
    fmt = detect_format(str(path))
    want = "conversion" if fmt == "wet" else "response"
    expected = []
    with open(path, "rb") as fh:
        for rec in WarcioIterator(fh):
            if rec.rec_type != want:
                continue
            rid = rec.rec_headers.get_header("WARC-Record-ID").strip("<>")
            body = rec.content_stream().read()  # de-chunked, content-decoded
            content_type = rec.http_headers.get_header("Content-Type") if rec.http_headers else None
            warc_type = rec.rec_headers.get_header("Content-Type") or ""
            if rec.http_headers is None and warc_type.startswith("application/http"):
                # warcio parses HTTP headers only for http(s) URIs (webmix has hard:: ones)
                head, _, body = body.partition(b"\r\n\r\n")
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-type:"):
                        content_type = line.split(":", 1)[1]
            if body:
                uri = rec.rec_headers.get_header("WARC-Target-URI")
                expected.append((rid, uri, body, parse_content_type(content_type)[1]))
    docs, _ = read(path, html_only=False)
    assert [d.id for d in docs] == [rid for rid, _, _, _ in expected]
    for doc, (_, uri, body, charset) in zip(docs, expected, strict=True):
        # warcio percent-encodes spaces and keeps wget's <...>
        assert doc.url is not None
        assert doc.url.replace(" ", "%20") == uri.strip().strip("<>")
        if fmt == "wet":
            assert doc.text == body.decode("utf-8")
        else:
            assert doc.text == decode_html(body, charset)[0]


def test_wget_uri_wrapping_is_stripped(cc_dir: Path) -> None:
    for name in ("dolma_wget2024_sample-0000.warc.gz", "dolma_wget2024_sample-0001.warc.gz"):
        raw = gzip.decompress((cc_dir / name).read_bytes())
        assert b"WARC-Target-URI: <https://" in raw  # the quirk is really there
        docs, _ = read(cc_dir / name)
        assert docs and all(d.url and d.url.startswith("https://") for d in docs)
        assert not any("<" in d.url or ">" in d.url for d in docs if d.url)
    docs, _ = read(cc_dir / "dolma_wget2024_sample-0000.warc.gz")
    assert docs[0].url == "https://www.semanticscholar.org/research/research-team"
    assert docs[0].id == "urn:uuid:283E41D7-F686-4C3E-B7DA-E8D248A100C1"


def test_wget_chunked_bodies_are_dechunked(cc_dir: Path) -> None:
    docs, _ = read(cc_dir / "dolma_wget2024_sample-0001.warc.gz")
    with open(cc_dir / "dolma_wget2024_sample-0001.warc.gz", "rb") as fh:
        chunked = [
            r.rec_headers.get_header("WARC-Record-ID").strip("<>")
            for r in WarcioIterator(fh)
            if r.rec_type == "response" and r.http_headers.get_header("Transfer-Encoding")
        ]
    assert len(chunked) == 4
    for doc in docs:
        if doc.id in chunked:
            assert doc.text.lstrip().lower().startswith("<!doctype html")


def test_revisits_are_skipped_and_counted(cc_dir: Path) -> None:
    docs, stats = read(cc_dir / "pywb_iana2014.warc.gz")
    assert stats.counters["skipped:revisit"] == 123
    assert stats.counters["skipped:request"] == 171
    assert stats.docs_in == 48 and len(docs) == 18
    assert stats.counters["http_status:302"] == 4
    # pywb stores de-chunked bodies under "Transfer-Encoding: chunked": kept as stored
    assert (
        docs[0].url == "http://www.iana.org/" and "<title>Internet Assigned Numbers" in docs[0].text
    )


def test_whole_file_gzip_stream(tmp_path: Path, cc_dir: Path) -> None:
    """A .warc.gz compressed as one gzip stream (not per record) reads the same."""
    plain = cc_dir / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"
    path = tmp_path / "one-stream.warc.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    docs, stats = read(path)
    expected, _ = read(plain)
    assert [(d.id, d.text) for d in docs] == [(d.id, d.text) for d in expected]
    assert len(docs) == 3 and errors(stats) == {}


def test_wet_conversion_records(cc_dir: Path) -> None:
    docs, stats = read(cc_dir / "whirlwind_CC-MAIN-2024-22_whirlwind.warc.wet.gz")
    assert len(docs) == 1 and stats.counters["skipped:warcinfo"] == 1
    doc = docs[0]
    assert doc.media_type == "text/plain" and doc.url == "https://an.wikipedia.org/wiki/Escopete"
    assert doc.id == "urn:uuid:ba729a40-ff84-4085-8d48-0a5b2ee0c42d"
    assert doc.text.startswith("Escopete - Biquipedia, a enciclopedia libre\nIr al contenido")
    assert len(doc.text.encode("utf-8")) == 4456  # the record's Content-Length
    docs, _ = read(cc_dir / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wet")
    assert [d.url for d in docs][0] == "http://0pointer.de/photos/?gallery=Australia&photo=496"


def test_wat_files_hold_no_documents(cc_dir: Path) -> None:
    for name in CC_COUNTS:
        if ".wat" in name:
            docs, stats = read(cc_dir / name)
            assert docs == [] and stats.counters["skipped:metadata"] >= 1 and errors(stats) == {}


def test_heritrix_warc_017_and_arc_agree(cc_dir: Path) -> None:
    warc_docs, _ = read(cc_dir / "aut_heritrix2008_example.warc.gz", html_only=False)
    arc_docs, arc_stats = read(cc_dir / "aut_heritrix2008_example.arc.gz", html_only=False)
    assert [d.url for d in warc_docs] == [d.url for d in arc_docs]
    assert [d.text for d in warc_docs] == [d.text for d in arc_docs]
    assert [d.media_type for d in warc_docs] == [d.media_type for d in arc_docs]
    assert arc_stats.counters["skipped:arc_header"] == 1
    # ARC ids are "<file>:<offset of the record>": the 3rd record starts at byte 782
    assert arc_docs[1].id == "aut_heritrix2008_example.arc.gz:782"
    assert arc_docs[1].url == "http://www.archive.org/robots.txt"
    assert {d.media_type for d in arc_docs} >= {"text/dns", "text/html", "image/gif"}


def test_clueweb09_quirks(cc_dir: Path) -> None:
    """LF-only HTTP headers, malformed WARC-Date, EUC-JP pages, "gzip" over plain bytes."""
    docs, stats = read(cc_dir / "resiliparse_clueweb09-quirk.warc.gz")
    assert len(docs) == 29 and errors(stats) == {}
    assert all(d.media_type == "text/html" for d in docs)
    assert docs[0].text.startswith(
        "<html>\n<head>\n<title>ブラウニー ブリーフケース【ヘッドポーター"
    )
    assert "HEADPORTER" in docs[0].text and "\ufffd" not in docs[0].text


def test_reading_is_deterministic(cc_dir: Path) -> None:
    path = cc_dir / "aut_heritrix2008_example.warc.gz"
    first, stats1 = read(path)
    second, stats2 = read(path)
    assert first == second and stats1.to_dict()["counters"] == stats2.to_dict()["counters"]


def test_max_doc_bytes_skips_without_reading(cc_dir: Path) -> None:
    docs, stats = read(cc_dir / "aut_heritrix2008_example.warc.gz", max_doc_bytes=20_000)
    assert len(docs) + stats.counters["skipped:too_large"] == 135
    assert stats.counters["skipped:too_large"] > 0
    assert all(len(d.text) <= 20_000 for d in docs)


# --------------------------------------------------------------- charsets

UDHR_CASES = [
    # (legacy file, UTF-8 file, charset label as a server would send it)
    ("Russian_Russky-Cyrillic", "Russian_Russky-UTF8", "windows-1251"),
    ("Chinese_Mandarin-GB2312", "Chinese_Mandarin-UTF8", "gb2312"),
    ("Japanese_Nihongo-SJIS", "Japanese_Nihongo-UTF8", "Shift_JIS"),
    ("Japanese_Nihongo-EUC", "Japanese_Nihongo-UTF8", "EUC-JP"),
    ("Japanese_Nihongo-JIS", "Japanese_Nihongo-UTF8", "ISO-2022-JP"),
    ("Greek_Ellinika-Greek", "Greek_Ellinika-UTF8", "iso-8859-7"),
    ("Hebrew_Ivrit-Hebrew", "Hebrew_Ivrit-UTF8", "iso-8859-8"),
]


@pytest.fixture(scope="module")
def udhr(shared_data: Path) -> Callable[[str], bytes]:
    """``name -> bytes`` of one declaration in NLTK's UDHR zip."""

    def read_one(name: str) -> bytes:
        with zipfile.ZipFile(shared_data / "langid" / "nltk_data_udhr.zip") as archive:
            return archive.read(f"udhr/{name}")

    return read_one


@pytest.fixture(scope="module")
def udhr_reference(udhr: Callable[[str], bytes]) -> Callable[..., str]:
    """``(name, chars=1500) -> `` the start of a UTF-8 declaration, as text."""

    def reference(name: str, chars: int = 1500) -> str:
        text = udhr(name).decode("utf-8", "ignore").lstrip("\ufeff").replace("\r\n", "\n")
        return text[:chars]

    return reference


@pytest.mark.parametrize(("legacy", "utf8", "label"), UDHR_CASES)
def test_charset_from_each_source(legacy: str, utf8: str, label: str, udhr: Callable,
                                  udhr_reference: Callable) -> None:
    raw, ref = udhr(legacy), udhr_reference(utf8)
    assert ref[:200] not in raw.decode("utf-8", "replace")  # really a legacy encoding
    by_header, _ = decode_html(raw, label)
    meta = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset={label}">'
    by_meta, _ = decode_html(meta.encode() + b"</head><body>" + raw, None)
    by_tag, _ = decode_html(f"<meta charset='{label}'>".encode() + raw, None)
    guessed, used = decode_html(raw, None)
    for text in (by_header, by_meta, by_tag, guessed):
        assert ref in text.replace("\r\n", "\n"), used


def test_charset_in_a_warc(tmp_path: Path, write_warc: Callable, udhr: Callable,
                           udhr_reference: Callable) -> None:
    """Legacy payloads in a real WARC container: header, meta, and guessed charsets."""
    cases = [
        (udhr("Russian_Russky-Cyrillic"), "text/html; charset=windows-1251", "Russian_Russky-UTF8"),
        (
            b'<html><head><meta charset="gb2312"></head><body>' + udhr("Chinese_Mandarin-GB2312"),
            "text/html",
            "Chinese_Mandarin-UTF8",
        ),
        (udhr("Japanese_Nihongo-SJIS"), "text/html", "Japanese_Nihongo-UTF8"),
        # a server that says Latin-1 for a UTF-8 page: valid UTF-8 wins
        (udhr("Russian_Russky-UTF8"), "text/html; charset=iso-8859-1", "Russian_Russky-UTF8"),
        # no Content-Type at all: sniffed as HTML, charset guessed
        (b"<html><body>" + udhr("Japanese_Nihongo-EUC"), None, "Japanese_Nihongo-UTF8"),
    ]
    path = tmp_path / "legacy.warc.gz"
    ids = write_warc(
        path, [(f"http://example.org/{i}", ct, body) for i, (body, ct, _) in enumerate(cases)]
    )
    docs, stats = read(path)
    assert [d.id for d in docs] == ids and errors(stats) == {}
    for doc, (_, _, ref) in zip(docs, cases, strict=True):
        assert doc.media_type == "text/html"
        assert udhr_reference(ref) in doc.text.replace("\r\n", "\n")


def test_charset_labels_and_never_raising() -> None:
    assert normalize_charset("ISO-8859-1") == "cp1252"
    assert normalize_charset('"utf8"') == "utf-8"
    assert normalize_charset("gb2312") == "gb18030"
    assert normalize_charset("x-sjis") == "cp932"
    for bad in ("base64", "unicode_escape", "rot13", "utf-7", "no-such-charset", "", None):
        assert normalize_charset(bad) is None
    assert meta_charset(b'<meta http-equiv=Content-Type content="text/html; charset=koi8-r">') == (
        "koi8-r"
    )
    assert meta_charset(b'<meta charset="utf-16">') == "utf-8"
    assert decode_html(b"\xef\xbb\xbfhi") == ("hi", "utf-8")
    assert decode_html(b"\xff\xfeh\x00i\x00") == ("hi", "utf-16-le")
    for junk in (b"\xff\xfe\xfd" * 100, bytes(range(256)) * 10, b"\x81\x8d\x8f\x90\x9d"):
        for label in (None, "utf-8", "base64", "shift_jis", "utf-16"):
            text, _ = decode_html(junk, label)
            assert isinstance(text, str) and text


def test_http_decoding_helpers(cc_dir: Path) -> None:
    assert dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n") == b"Wikipedia"
    assert dechunk(b"<!doctype html><p>") == b"<!doctype html><p>"  # stored de-chunked
    wet = cc_dir / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wet"
    html = wet.read_bytes()
    assert decode_content(gzip.compress(html), "gzip", 10**7) == (html, "")
    assert decode_content(html, "gzip", 10**7) == (html, "")  # header kept, bytes decoded
    assert decode_content(gzip.compress(html), "gzip", 100) == (None, "too_large")
    assert decode_content(zstandard.compress(html), "br", 10**7) == (None, "content_encoding")
    cut = gzip.compress(html)[: len(html) // 4]  # a truncated gzip body: keep what inflates
    partial, _ = decode_content(cut, "gzip", 10**7)
    assert partial and html.startswith(partial)


# ------------------------------------------------------------------- JSONL


def test_ccnet_jsonl_fields(cc_dir: Path) -> None:
    """The dolma CCNet files have text/id top level and the URL under metadata.url."""
    path = cc_dir / "dolma_ccnet_cc_en_head-0091.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    assert {"text", "id", "metadata"} <= set(first) and "url" not in first
    docs, stats = read(path)
    assert len(docs) == 10 and errors(stats) == {}
    assert docs[0].id == first["id"] and docs[0].text == first["text"] and docs[0].url is None
    assert docs[0].media_type == "text/plain"
    docs, _ = read(path, url_field="metadata.url")
    assert docs[0].url == first["metadata"]["url"]
    assert all(d.url for d in docs)
    docs, stats = read(path, text_field="raw_content")
    assert docs == [] and stats.counters["skipped:no_text_field"] == 10


@pytest.fixture
def moby_lines(moby_path: Path) -> list[bytes]:
    """The lines of Moby Dick's JSONL."""
    with gzip.open(moby_path, "rb") as fh:
        return fh.read().splitlines(keepends=True)


def test_jsonl_compressed_variants_agree(tmp_path: Path, moby_lines: list[bytes],
                                         moby_path: Path) -> None:
    lines = moby_lines
    plain = tmp_path / "moby.jsonl"
    plain.write_bytes(b"".join(lines))
    (tmp_path / "moby.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (tmp_path / "moby.jsonl.zst").write_bytes(zstandard.compress(plain.read_bytes()))
    (tmp_path / "moby.json.gz").write_bytes(moby_path.read_bytes())
    reference, _ = read(plain)
    assert len(reference) == len(lines) == 138
    assert reference[0].id == "etymology"
    for name in ("moby.jsonl.gz", "moby.jsonl.zst", "moby.json.gz"):
        docs = read(tmp_path / name)[0]
        assert [(d.id, d.text, d.url) for d in docs] == [(d.id, d.text, d.url) for d in reference]
        assert docs[0].source == name
        assert plan_splits(str(tmp_path / name), "jsonl", ReadOptions(split_bytes=1000)) == 1


def test_jsonl_splits_read_every_line_once(tmp_path: Path, moby_lines: list[bytes]) -> None:
    lines = moby_lines
    path = tmp_path / "moby.jsonl"
    path.write_bytes(b"".join(lines))
    size = path.stat().st_size
    options = ReadOptions(split_bytes=100_000)
    n = plan_splits(str(path), "jsonl", options)
    assert n == -(-size // 100_000) == 13
    whole, _ = read(path)
    for n_splits in (1, 2, 3, 7, 13, 137, 138, 400):
        docs: list[Document] = []
        stats = StepStats()
        for split in range(n_splits):
            docs.extend(read_shard(str(path), "jsonl", split, n_splits, options, stats))
        assert docs == whole, n_splits
        assert stats.docs_in == 138 and errors(stats) == {}


def test_jsonl_split_at_exact_line_start(tmp_path: Path) -> None:
    lines = [json.dumps({"id": str(i), "text": "x" * 9}).encode() + b"\n" for i in range(10)]
    assert len({len(line) for line in lines}) == 1  # equal lines: 10 splits = 10 line starts
    path = tmp_path / "even.jsonl"
    path.write_bytes(b"".join(lines))
    for split in range(10):
        docs = list(read_shard(str(path), "jsonl", split, 10, ReadOptions(), StepStats()))
        assert [d.id for d in docs] == [str(split)]


def test_jsonl_missing_id_gets_offset_and_bad_lines_are_counted(tmp_path: Path,
                                                                moby_lines: list[bytes]) -> None:
    lines = moby_lines[:5]
    objs = [json.loads(line) for line in lines]
    del objs[1]["id"]
    body = [json.dumps(o).encode() + b"\n" for o in objs]
    body.insert(2, b"{not json\n")
    body.insert(3, b'{"id": "x", "text": "caf\xe9"}\n')  # Latin-1 byte: invalid UTF-8
    body.insert(4, b"[1, 2]\n")
    body.insert(5, b"\n")
    body.insert(6, b'{"id": "s", "text": "lone \\ud800 surrogate"}\n')
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(body))
    docs, stats = read(path)
    assert [d.id for d in docs] == ["etymology", f"mixed.jsonl:{len(body[0])}", "s"] + [
        o["id"] for o in objs[2:]
    ]
    assert stats.counters["error:bad_json"] == 3 and stats.counters["skipped:blank_line"] == 1
    assert stats.counters["repaired:lone_surrogates"] == 1
    docs[2].text.encode("utf-8")  # writable as UTF-8


# ----------------------------------------------------------------- Parquet


def _moby_parquet(path: Path, moby_lines: list[bytes], rows_per_group: int) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in moby_lines]
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "text": [r["text"] for r in rows],
            "meta": [{"url": f"https://moby.example/{r['id']}"} for r in rows],
        }
    )
    pq.write_table(table, path, row_group_size=rows_per_group)
    return rows


def test_parquet_splits_cover_each_row_once(tmp_path: Path, moby_lines: list[bytes]) -> None:
    path = tmp_path / "moby.parquet"
    rows = _moby_parquet(path, moby_lines, rows_per_group=10)
    assert pq.ParquetFile(path).metadata.num_row_groups == 14
    whole, stats = read(path, url_field="meta.url")
    assert [d.id for d in whole] == [r["id"] for r in rows] and stats.docs_in == 138
    assert whole[3].url == f"https://moby.example/{rows[3]['id']}"
    assert whole[3].text == rows[3]["text"] and whole[3].media_type == "text/plain"
    options = ReadOptions(split_bytes=200_000, url_field="meta.url")
    n = plan_splits(str(path), "parquet", options)
    assert 2 <= n <= 14
    for n_splits in (n, 3, 14):
        docs: list[Document] = []
        for split in range(n_splits):
            part = list(read_shard(str(path), "parquet", split, n_splits, options, StepStats()))
            docs.extend(part)
        assert docs == whole
    assert plan_splits(str(path), "parquet", ReadOptions()) == 1


def test_parquet_missing_fields_and_limits(tmp_path: Path, moby_lines: list[bytes]) -> None:
    path = tmp_path / "moby.parquet"
    rows = _moby_parquet(path, moby_lines, rows_per_group=50)
    docs, stats = read(path, id_field="nope")
    assert docs[0].id == "moby.parquet:0" and docs[-1].id == f"moby.parquet:{len(rows) - 1}"
    docs, stats = read(path, text_field="raw_content")
    assert docs == [] and stats.counters["skipped:no_text_field"] == 138
    limit = 20_000
    docs, stats = read(path, max_doc_bytes=limit)
    big = sum(len(r["text"].encode()) > limit for r in rows)
    assert big > 0 and stats.counters["skipped:too_large"] == big and len(docs) == 138 - big
