"""``url_filter_v1``: drop documents whose URL is blocklisted (datatrove's ``URLFilter`` rules).

The rules and list files are those of :mod:`pipeline.text.url_filter`: a domain blocklist
(the host and every parent domain), a URL list, banned words, soft-banned words (at least
``soft_word_threshold`` distinct ones) and banned subwords. The reason of a removal, and
``url_filter_rule`` in metadata, name the first rule that fired (``url_domain_blocklist``,
``url_list``, ``url_banned_word``, ``url_soft_banned_words``, ``url_banned_subword``);
``drop: false`` only annotates. Documents without a URL are kept and counted (``no_url``).

The 4.56M-domain list is built once into a hash array in ``cache_dir`` (default
``~/.cache/refinery/url_filter``) and memory-mapped by every worker, so a node holds it
once (36 MB).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import Filter, Rejection, StepOptions, require_folder
from pipeline.text.url_filter import FILES, RULES, URLRules

Rule = Literal["url_domain_blocklist", "url_list", "url_banned_word", "url_soft_banned_words",
               "url_banned_subword"]


class URLFilterOptions(StepOptions):
    """Options of ``url_filter_v1``."""

    lists: str = Field("../shared/data/lists/url_blocklist",
                       description="folder with domains.gz, urls.gz, banned_words.txt, "
                                   "soft_banned_words.txt, banned_subwords.txt")
    rules: list[Rule] = Field(list(RULES), min_length=1, description="the rules to apply")
    soft_word_threshold: int = Field(2, ge=1, description="soft-banned words that block a URL")
    drop: bool = Field(True, description="drop blocked documents; false: annotate only")
    cache_dir: str | None = Field(
        None, description="where the domain hash array is built and mapped from; "
                          "default ~/.cache/refinery/url_filter")


class URLFilter(Filter):
    """Writes ``url_filter_rule`` (null when no rule fires); drops when a rule fires."""

    name = "url_filter_v1"
    Options = URLFilterOptions
    options: URLFilterOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {"url_filter_rule": pa.string()}
    transient_attrs = ("_rules",)  # memory-mapped array and automaton, rebuilt per worker

    def __init__(self, options: URLFilterOptions | None = None) -> None:
        super().__init__(options)
        self._rules: URLRules | None = None

    def check(self) -> None:
        """Check that ``lists`` holds the file of every enabled rule."""
        o = self.options
        require_folder("lists", o.lists, [FILES[r] for r in o.rules],
                       "point lists at a folder like ../shared/data/lists/url_blocklist, or "
                       "leave the rules whose files are missing out of rules")

    def setup(self) -> None:
        """Load the lists (the domain array is built on first use on the node, then mapped)."""
        if self._rules is None:
            o = self.options
            self._rules = URLRules.load(o.lists, o.rules, o.soft_word_threshold, o.cache_dir)

    def reject_reason(self, doc: Document) -> Rejection | None:
        """Annotate ``url_filter_rule``; return the rule (with what matched) when ``drop``."""
        self.setup()
        assert self._rules is not None
        if not doc.url:
            doc.metadata["url_filter_rule"] = None
            self.count("no_url")
            return None
        rule = self._rules.rule(doc.url)
        doc.metadata["url_filter_rule"] = None if rule is None else str(rule)
        if rule is not None and not self.options.drop:
            self.count(f"annotated:{rule}")
        return rule if self.options.drop else None
