"""PII masking: e-mail, phone and IPv4 patterns, real SpamAssassin mail, the ``pii_v1`` step."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.document import Document
from pipeline.core.registry import get_step_class
from pipeline.core.step import StepContext, StepStats
from pipeline.text.pii import (
    EMAIL_PLACEHOLDER,
    EMAIL_RE,
    IP_PLACEHOLDER,
    PHONE_PLACEHOLDER,
    mask_emails,
    mask_ips,
    mask_phone_numbers,
    mask_pii,
)

EM, PH, IP = EMAIL_PLACEHOLDER, PHONE_PLACEHOLDER, IP_PLACEHOLDER

# ------------------------------------------------------------------ e-mail


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail john.doe@example.com today", f"mail {EM} today"),
        ("Write to <exmh-workers-admin@redhat.com>.", f"Write to <{EM}>."),
        ("(zzzz+tag@localhost.netnoteinc.com)", f"({EM})"),
        ("bounce: list-admin=example.org@lists.sf.net,", f"bounce: {EM},"),
        ("mailto:First_Last@sub.domain.co.uk?subject=hi", f"mailto:{EM}?subject=hi"),
        ("Contact: jörg.müller@beispiel.de.", f"Contact: {EM}."),
        ("relay cpunks@[207.200.56.4] said", f"relay {EM} said"),
        ("from forteana@y... wrote", f"from {EM} wrote"),
        ("Perl: 'whitelist_test\\@whitelist.example.org'", f"Perl: '{EM}'"),
        ("a@b.cc,c@d.ee", f"{EM},{EM}"),
        ("x?cc=one@a.com&cc=two@b.com", f"x?{EM}&{EM}"),
    ],
)
def test_emails_are_masked(text: str, masked: str) -> None:
    out, n = mask_emails(text)
    assert out == masked
    assert n == masked.count(EM)


@pytest.mark.parametrize(
    "text",
    [
        "user at example dot com",
        "thanks @jack and @jill.smith for the help",
        "a@b is not an address",
        "email me: john [at] example [dot] com",
        "price @ 5.99 each",
        "foo@bar. end of sentence",
        "",
    ],
)
def test_non_addresses_are_left_alone(text: str) -> None:
    assert mask_emails(text) == (text, 0)


def test_mask_emails_matches_a_plain_regex_scan() -> None:
    # the windowed scan must replace exactly what a whole-text EMAIL_RE.subn replaces
    texts = [
        "a b c@d.ef g@h.ij",
        "x" * 300 + "@long.local.part and y@z.io",
        "@@x.com a@@b.com ab@c.d@e.fg",
        "one@two.com" * 3,
        "name@host..tld? (@[10.0.0.1]) q\\@r.st",
    ]
    for t in texts:
        assert mask_emails(t) == EMAIL_RE.subn(EM, t), t


# ------------------------------------------------------------------ phone numbers


@pytest.mark.parametrize(
    "number",
    [
        "(555) 123-4567",
        "(555)123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "+1 555 123 4567",
        "+1-555-123-4567",
        "+1 (555) 123-4567",
        "1-800-555-1234",
        "1 (416) 410-9364",
        "+1.949.833.2800",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+33 1 23 45 67 89",
        "+49-241-80-22220",
        "+91 98765 43210",
        "+4915112345678",
    ],
)
def test_phone_numbers_are_masked(number: str) -> None:
    for text in (f"Call {number} now.", f"Tel:{number}", f"({number})", number):
        out, n = mask_phone_numbers(text)
        assert (out, n) == (text.replace(number, PH), 1), text


@pytest.mark.parametrize(
    "text",
    [
        "In 1999 the club had 2000 members.",
        "Dates: 2002-08-22, 08/22/2002, 22.08.2002 and 2002/08/22.",
        "It cost $1,234,567.89 or €555 123 4567 in total.",
        "ISBN 978-0-306-40615-7 and ISBN 0-306-40615-2.",
        "Order 123456789012 and ticket 5551234567 shipped.",
        "Received by 66.187.233.211 with ESMTP id g7MBY7g11259.",
        "Version 8.11.6/8.11.6 at 07:36:16 -0400.",
        "ZIP 94105-1234 and SSN-like 123-45-6789.",
        "Card 4111 1111 1111 1111 expired.",
        "Coordinates 36 800 824 896 1024 600 601.",
        "Numbers 555-123-45678 and 555-123-4567-89 are too long.",
        "Score +12.5 points, +100 200 300 votes.",
        "Phone 123-456-7890 has an invalid area code.",
    ],
)
def test_phone_negatives(text: str) -> None:
    assert mask_phone_numbers(text) == (text, 0)


def test_two_numbers_side_by_side() -> None:
    out, n = mask_phone_numbers("Phone: 555-123-4567 555-987-6543; fax (620) 235-4545.")
    assert (out, n) == (f"Phone: {PH} {PH}; fax {PH}.", 3)


# ------------------------------------------------------------------ IPv4


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("from [66.187.233.211] by", f"from [{IP}] by"),
        ("localhost 127.0.0.1.", f"localhost {IP}."),
        ("0.0.0.0 and 255.255.255.255", f"{IP} and {IP}"),
        ("gw=10.1.2.1,dns=8.8.8.8", f"gw={IP},dns={IP}"),
    ],
)
def test_ips_are_masked(text: str, masked: str) -> None:
    assert mask_ips(text) == (masked, masked.count(IP))


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3.4.5 released",
        "256.1.1.1 is not an address",
        "1.2.3.256 is not either",
        "leading zeros 010.001.000.001",
        "three parts 10.0.1 only",
        "section 2.3.4.5.6",
        "v10.0.0.1",
    ],
)
def test_ip_negatives(text: str) -> None:
    assert mask_ips(text) == (text, 0)


# ------------------------------------------------------------------ all kinds together


def test_mask_pii_counts_and_switches() -> None:
    text = "jo@ex.com at 10.0.0.1, call 555-123-4567 or +44 20 7946 0958."
    assert mask_pii(text) == (f"{EM} at {IP}, call {PH} or {PH}.", 1, 2, 1)
    assert mask_pii(text, emails=False, ips=False) == (
        f"jo@ex.com at 10.0.0.1, call {PH} or {PH}.", 0, 2, 0,
    )


# ------------------------------------------------------------------ real mail


@pytest.fixture(scope="module")
def spamassassin(shared_data: Path) -> list[dict]:
    path = shared_data / "noisy" / "spamassassin.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# The end-to-end job test looks for r"[\w.+-]+@[\w-]+\.[\w.-]+"; the brief's loose check is
# r"\S+@\S+\.\w+". Both are tested as "an @ with such a character before it and such a
# domain after it", which finds the same texts and scans fast from the literal @.
_AFTER_STRICT = re.compile(r"@[\w-]+\.[\w.-]+")
_AFTER_LOOSE = re.compile(r"@\S+\.\w+")
_BEFORE_STRICT = re.compile(r"[\w.+-]")


def _addresses(text: str, loose: bool = False) -> list[str]:
    found = []
    for m in (_AFTER_LOOSE if loose else _AFTER_STRICT).finditer(text):
        before = text[m.start() - 1 : m.start()]
        if before and (not before.isspace() if loose else _BEFORE_STRICT.match(before)):
            found.append(text[max(0, m.start() - 30) : m.end()])
    return found


def test_address_finder_agrees_with_the_plain_regexes() -> None:
    strict, loose = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), re.compile(r"\S+@\S+\.\w+")
    for t in ["a@b.c", "@b.c", " @b.c", "x@y", "(@[1.2.3.4])", "<a@b.cd>", "é@ü.de", "a@@b.c"]:
        assert bool(_addresses(t)) == bool(strict.search(t)), t
        assert bool(_addresses(t, loose=True)) == bool(loose.search(t)), t


def test_no_address_survives_in_real_mail(spamassassin: list[dict]) -> None:
    total = shaped = chars_before = chars_after = 0
    loose_docs = 0
    for i, rec in enumerate(spamassassin):
        raw = rec["raw"]
        masked, n_email, _, _ = mask_pii(raw)
        total += n_email
        shaped += len(_addresses(raw))
        chars_before += len(raw)
        chars_after += len(masked)
        assert not _addresses(masked), (rec["id"], _addresses(masked))
        if i % 10 == 0:  # a fixed sample, checked with the loose pattern
            loose_docs += bool(_addresses(masked, loose=True))
    assert total > 50_000
    assert shaped <= total <= 1.05 * shaped  # one placeholder per address, few extra
    assert chars_after > 0.95 * chars_before  # nothing swallowed in bulk
    # what the loose pattern still finds is not an address: a URL such as
    # "WebX?14@@.ee91dd6", percent-encoded or uuencoded text
    assert loose_docs <= 2


def test_real_mail_masks_headers_and_keeps_prose(spamassassin: list[dict]) -> None:
    rec = spamassassin[0]
    masked, n_email, n_phone, n_ip = mask_pii(rec["raw"])
    assert "exmh-workers-admin@redhat.com" in rec["raw"]
    assert "exmh-workers-admin@redhat.com" not in masked
    assert "[66.187.233.211]" in rec["raw"] and f"[{IP}]" in masked
    assert n_email > 5 and n_ip > 3
    assert "Delivered-To:" in masked and "Received: from" in masked
    assert "(8.11.6/8.11.6)" in masked  # sendmail versions are not IPs or phones


def test_real_phone_numbers_in_spam(spamassassin: list[dict]) -> None:
    phones = sum(mask_phone_numbers(r["raw"])[1] for r in spamassassin if r["label"] == "spam")
    assert phones > 300
    ham_hits = [
        m for r in spamassassin[:400] for m in re.findall(r".{20}\|\|\|PHONE_NUMBER\|\|\|.{5}",
                                                           mask_phone_numbers(r["raw"])[0])
    ]
    assert len(ham_hits) < 40  # ham mail rarely holds phone numbers; no mass false positives


# ------------------------------------------------------------------ step


def test_pii_step_masks_and_records_counts() -> None:
    cls = get_step_class("pii_v1")
    assert cls.metadata_fields == {
        "pii_email_count": pa.int32(),
        "pii_phone_count": pa.int32(),
        "pii_ip_count": pa.int32(),
    }
    docs = [
        Document("a", "Mail a@b.org or c@d.net, call (555) 123-4567, host 192.168.1.20."),
        Document("b", "Nothing personal in here."),
    ]
    ctx = StepContext(StepStats())
    out = list(cls().run(docs, ctx))
    assert [d.id for d in out] == ["a", "b"]
    assert out[0].text == f"Mail {EM} or {EM}, call {PH}, host {IP}."
    assert out[0].metadata == {"pii_email_count": 2, "pii_phone_count": 1, "pii_ip_count": 1}
    assert out[1].metadata == {"pii_email_count": 0, "pii_phone_count": 0, "pii_ip_count": 0}
    assert out[1].text == "Nothing personal in here."
    assert ctx.stats.counters["pii_docs_masked"] == 1
    assert ctx.stats.counters["pii_emails"] == 2


def test_pii_step_options_switch_kinds_off() -> None:
    cls = get_step_class("pii_v1")
    step = cls(cls.Options(emails=False, phone_numbers=False))
    doc = step.apply(Document("a", "a@b.org 555-123-4567 10.0.0.1"), StepContext(StepStats()))
    assert doc.text == f"a@b.org 555-123-4567 {IP}"
    assert doc.metadata == {"pii_email_count": 0, "pii_phone_count": 0, "pii_ip_count": 1}
    with pytest.raises(ValueError):
        cls.Options(email=False)


def test_pathological_inputs_stay_fast() -> None:
    import time

    texts = [
        "x \\@a.bc " * 40_000,  # escaped @ without a local part
        "@a.com" * 50_000,
        ("x" * 150 + "@y.com ") * 2_000,  # local parts longer than the search window
        "a." * 200_000 + "@x.com",
        "1 2 3 4 5 6 7 8 9 " * 30_000,
        "+1 " * 100_000,
        "1.2.3.4." * 50_000,
    ]
    start = time.process_time()
    counts = [mask_pii(t)[1:] for t in texts]
    assert time.process_time() - start < 10  # about 0.5 s; a quadratic scan takes minutes
    assert counts[0] == (0, 0, 0) and counts[2][0] == 2_000 and counts[4] == (0, 0, 0)
    short = "x \\@a.bc q@r.st " * 100
    assert mask_emails(short) == EMAIL_RE.subn(EM, short)
