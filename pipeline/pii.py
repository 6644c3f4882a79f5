"""Masking of e-mail addresses, phone numbers and IPv4 addresses.

Each ``mask_*`` function returns the masked text and the number of replacements. The
placeholders are ``|||EMAIL_ADDRESS|||``, ``|||PHONE_NUMBER|||`` and ``|||IP_ADDRESS|||``
(dolma's convention).

* **E-mail**: ``local@domain.tld``, with a local part of word characters and ``. + - % =``
  (bounce addresses such as ``list-admin=example.org@host`` included) and a domain of at
  least two dot-separated labels. Unicode letters are allowed. ``a@b``, ``@mention`` and
  ``user at example dot com`` are left alone. A trailing sentence period is not taken.
* **Phone**: North American numbers, ``(555) 123-4567``, ``555-123-4567``,
  ``555.123.4567``, ``555 123 4567``, optionally with a ``1`` / ``+1`` prefix, area code
  starting 2-9, the same separator between the last two groups; and international numbers
  written with ``+`` and a country code: ``+44 20 7946 0958``, ``+44 (0)20 7946 0958``,
  ``+33 1 23 45 67 89``, ``+4915112345678`` (8 to 15 digits in all). Digits glued to
  letters or further digit groups (``ISBN 978-0-306-40615-7``, ``555-123-45678``, order
  numbers, dates ``2002-08-22``, years, prices, times) do not match.
* **IPv4**: four dot-separated octets 0-255 without leading zeros, not part of a longer
  dotted number (``1.2.3.4.5``) or a word.
"""

from __future__ import annotations

import re

EMAIL_PLACEHOLDER = "|||EMAIL_ADDRESS|||"
PHONE_PLACEHOLDER = "|||PHONE_NUMBER|||"
IP_PLACEHOLDER = "|||IP_ADDRESS|||"

EMAIL_RE = re.compile(
    r"(?<![\w.+%=-])"  # start at the beginning of the local part (keeps the scan linear)
    r"[\w.+%=-]+@[\w-]+(?:\.+[\w-]+)+"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")

_SEP = r"[ \u00a0.\-]"
PHONE_RE = re.compile(
    r"(?<![\w+\-/.,$€£])"  # not glued to a word, another number, a price
    r"(?:"
    # North America: optional 1 / +1, then (NXX) XXX-XXXX or NXX-XXX-XXXX with one separator
    r"(?:\+?1[ \u00a0.\-]?)?"
    r"(?:\([2-9]\d\d\)[ \u00a0.\-]?\d{3}[ \u00a0.\-]\d{4}"
    r"|[2-9]\d\d(?P<sep>[ \u00a0.\-])\d{3}(?P=sep)\d{4})"
    r"|"
    # international, explicit '+country': compact E.164 or groups with separators
    r"(?P<intl>\+[1-9]\d{7,14}"
    rf"|\+[1-9]\d{{0,2}}{_SEP}?(?:\(0\){_SEP}?)?(?:\(\d{{1,4}}\)|\d{{1,5}})(?:{_SEP}\d{{1,5}}){{1,5}})"
    r")"
    r"(?![\w\-]|[.,/]\d)"
)


def mask_emails(text: str) -> tuple[str, int]:
    """Replace e-mail addresses with ``|||EMAIL_ADDRESS|||``; return (text, count)."""
    if "@" not in text:
        return text, 0
    return EMAIL_RE.subn(EMAIL_PLACEHOLDER, text)


def mask_ips(text: str) -> tuple[str, int]:
    """Replace IPv4 addresses with ``|||IP_ADDRESS|||``; return (text, count)."""
    if "." not in text:
        return text, 0
    return IPV4_RE.subn(IP_PLACEHOLDER, text)


def mask_phone_numbers(text: str) -> tuple[str, int]:
    """Replace phone numbers with ``|||PHONE_NUMBER|||``; return (text, count)."""
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        intl = m.group("intl")
        if intl is not None and not 8 <= sum(c.isdigit() for c in intl) <= 15:
            return intl  # too few or too many digits for a phone number
        count += 1
        return PHONE_PLACEHOLDER

    return PHONE_RE.sub(repl, text), count


def mask_pii(
    text: str, emails: bool = True, phone_numbers: bool = True, ips: bool = True
) -> tuple[str, int, int, int]:
    """Mask the selected kinds (e-mail first, then IPv4, then phone numbers).

    Returns (text, e-mail count, phone count, IP count).
    """
    n_email = n_phone = n_ip = 0
    if emails:
        text, n_email = mask_emails(text)
    if ips:
        text, n_ip = mask_ips(text)
    if phone_numbers:
        text, n_phone = mask_phone_numbers(text)
    return text, n_email, n_phone, n_ip
