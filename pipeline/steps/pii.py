"""``pii_v1``: masks e-mail addresses, phone numbers and IPv4 addresses (:mod:`pipeline.text.pii`)."""

from __future__ import annotations

import re
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import Mapper, StepContext, StepOptions
from pipeline.text.pii import EMAIL_PLACEHOLDER, IP_PLACEHOLDER, PHONE_PLACEHOLDER, mask_pii

_KINDS = {EMAIL_PLACEHOLDER: "email", PHONE_PLACEHOLDER: "phone", IP_PLACEHOLDER: "ip"}
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in _KINDS))
#: characters of the masked text a change sample keeps (the report shows the beginning)
SAMPLE_CHARS = 4000


def masked_spans(text: str) -> dict:
    """Return a change sample of masked ``text``: its beginning and the placeholders in it,
    ``{"text": ..., "spans": [[start, end, kind], ...]}`` (the masked values are not kept)."""
    head = text[:SAMPLE_CHARS]
    return {"text": head, "spans": [[m.start(), m.end(), _KINDS[m.group(0)]]
                                    for m in _PLACEHOLDER_RE.finditer(head)]}


class PIIOptions(StepOptions):
    """Which kinds of personal data to mask."""

    emails: bool = Field(True, description="mask e-mail addresses")
    phone_numbers: bool = Field(True, description="mask phone numbers")
    ips: bool = Field(True, description="mask IPv4 addresses")


class PIIMasker(Mapper):
    """Replaces personal data with placeholders and records how many of each it replaced."""

    name = "pii_v1"
    Options: ClassVar[type[StepOptions]] = PIIOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {
        "pii_email_count": pa.int32(),
        "pii_phone_count": pa.int32(),
        "pii_ip_count": pa.int32(),
    }

    def apply(self, doc: Document, ctx: StepContext) -> Document:
        """Mask ``doc.text`` in place and set the three count fields (0 for disabled kinds)."""
        o: PIIOptions = self.options  # type: ignore[assignment]
        doc.text, n_email, n_phone, n_ip = mask_pii(
            doc.text, emails=o.emails, phone_numbers=o.phone_numbers, ips=o.ips
        )
        doc.metadata["pii_email_count"] = n_email
        doc.metadata["pii_phone_count"] = n_phone
        doc.metadata["pii_ip_count"] = n_ip
        if n_email or n_phone or n_ip:
            if ctx.wants_sample(doc, self.name):
                ctx.record_sample(doc, self.name, masked_spans(doc.text))
            ctx.stats.counters["pii_docs_masked"] += 1
            ctx.stats.counters["pii_emails"] += n_email
            ctx.stats.counters["pii_phone_numbers"] += n_phone
            ctx.stats.counters["pii_ips"] += n_ip
        return doc
