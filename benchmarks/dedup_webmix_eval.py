"""Recall and false removals of exact + MinHash deduplication on the shared webmix crawl.

``../shared/data/webmix/labels.jsonl`` marks 255 planted exact duplicates
(``?utm_source=mirror``, same payload) and 255 planted near duplicates (``?page=print``,
about 3% of the payload's whitespace-separated words replaced, in the HTML source for
HTML pages). This module reads the eight WARC shards in job order (shard, record), runs
exact deduplication and then MinHash on the survivors, exactly as a job with
``dedup_exact_v1`` followed by ``dedup_minhash_v1`` decides, and reports:

* recall: the fraction of planted pairs whose two documents end up in one duplicate
  group (one of them removed), for near, exact and both;
* removals outside planted pairs, and among them false removals: removed documents whose
  exact shingle Jaccard with the document kept for their group is below 0.5 (exact
  duplicates count as similarity 1). Every other removal outside the planted pairs is a
  real duplicate in the data (the SpamAssassin corpus repeats spam, the 2008 crawl has
  template pages, UDHR has near-identical variants).

Two text representations are evaluated: ``extracted`` (resiliparse
``extract_plain_text(main_content=True)`` for HTML, the payload for other types), which is
what a job deduplicates after ``extract_v1``, and ``payload`` (the decoded HTTP body), what
a job deduplicates when the dedup steps run before extraction.

Usage (from the repository root)::

    python benchmarks/dedup_webmix_eval.py [--data ../shared/data/webmix]
        [--representation extracted|payload] [--ngram 5 3] [--threshold 0.8 0.7] ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.dedup.minhash import minhash_clusters  # noqa: E402
from pipeline.dedup.text import ShingleHasher, document_key, jaccard  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "webmix"


@dataclass
class WebmixDoc:
    """One webmix response record."""

    shard: int
    url: str
    content_type: str
    text: str


def load_webmix(data_dir: Path, representation: str = "extracted") -> list[WebmixDoc]:
    """Return every response record of the webmix shards in ``data_dir``, in (shard, record)
    order; ``representation`` is ``extracted`` (main-content text of HTML) or ``payload``."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    if representation not in ("extracted", "payload"):
        raise ValueError("representation must be 'extracted' or 'payload'")
    docs: list[WebmixDoc] = []
    for path in sorted(Path(data_dir).glob("webmix-*.warc.gz")):
        shard = int(path.name.split("-")[1].split(".")[0])
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                body = rec.reader.read()
                ctype = rec.http_content_type or ""
                text = bytes_to_str(body, detect_encoding(body))
                if representation == "extracted" and "html" in ctype:
                    from resiliparse.extract.html2text import extract_plain_text
                    from resiliparse.parse.html import HTMLTree

                    text = extract_plain_text(HTMLTree.parse(text), main_content=True)
                docs.append(WebmixDoc(shard, rec.headers["WARC-Target-URI"].strip(), ctype, text))
    return docs


def load_labels(data_dir: Path) -> dict[str, dict]:
    """Return the labels of ``data_dir/labels.jsonl`` by URL (stripped: the WARC headers lose
    trailing spaces)."""
    labels = {}
    with open(Path(data_dir) / "labels.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            rec["url"] = rec["url"].strip()
            if "dup_of" in rec:
                rec["dup_of"] = rec["dup_of"].strip()
            labels[rec["url"]] = rec
    return labels


@dataclass
class WebmixResult:
    """The figures one configuration gives."""

    representation: str
    num_perm: int
    bands: int
    ngram: int
    threshold: float
    verify: str
    documents: int
    planted_near: int
    planted_exact: int
    recall_near: float
    recall_exact: float
    recall_all: float
    non_planted: int
    removed_non_planted: int
    false_removals: int
    false_removal_rate: float
    removed_exact: int
    removed_near: int
    min_similarity_removed: float
    seconds: float


def dedup_groups(
    texts: list[str], num_perm: int, bands: int, ngram: int, threshold: float, verify: str,
    keys: list[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (group of each document, removed flag) for exact then MinHash deduplication.

    The group is the index of the kept document that stands for it. ``keys`` are the
    documents' exact-dedup keys when already computed.
    """
    n = len(texts)
    keys = keys if keys is not None else [document_key(t) for t in texts]
    first_of: dict[tuple[int, int], int] = {}
    group = np.arange(n)
    for i, k in enumerate(keys):
        group[i] = first_of.setdefault(k, i)
    keep_exact = group == np.arange(n)  # the first copy, as exact_keep_mask keeps
    survivors = np.flatnonzero(keep_exact)
    _, cluster, _ = minhash_clusters([texts[i] for i in survivors], num_perm, bands, ngram,
                                     threshold, verify=verify)
    near_root = survivors[cluster]  # kept document of each survivor's cluster
    root = group.copy()
    root[survivors] = near_root
    root = root[group]  # exact copies follow their kept copy into its near cluster
    removed = root != np.arange(n)
    return root, removed


def _first_copies(keys: list[tuple[int, int]]) -> list[int]:
    first: dict[tuple[int, int], int] = {}
    return [first.setdefault(k, i) for i, k in enumerate(keys)]


def evaluate(
    docs: list[WebmixDoc], labels: dict[str, dict], representation: str,
    num_perm: int = 120, bands: int = 20, ngram: int = 5, threshold: float = 0.8,
    verify: str = "exact",
) -> WebmixResult:
    """Run exact + MinHash deduplication on ``docs`` and score it against ``labels``."""
    t0 = time.perf_counter()
    texts = [d.text for d in docs]
    keys = [document_key(t) for t in texts]
    root, removed = dedup_groups(texts, num_perm, bands, ngram, threshold, verify, keys)
    seconds = time.perf_counter() - t0
    index = {d.url: i for i, d in enumerate(docs)}
    near, exact = [], []
    planted: set[int] = set()
    for url, rec in labels.items():
        if "dup_of" not in rec:
            continue
        i, j = index[url], index[rec["dup_of"]]
        planted.update((i, j))
        (near if "near_dup" in rec["source"] else exact).append(root[i] == root[j])
    n_exact = int(sum(first != i for i, first in enumerate(_first_copies(keys))))
    shingler = ShingleHasher(ngram)
    non_planted = [i for i in range(len(docs)) if i not in planted]
    removed_np = [i for i in non_planted if removed[i]]
    sims = []
    for i in removed_np:
        if keys[i] == keys[root[i]]:
            sims.append(1.0)
        else:
            a, b = shingler.shingle_sets([texts[i], texts[root[i]]])
            sims.append(jaccard(a, b))
    false = sum(s < 0.5 for s in sims)
    all_pairs = near + exact
    return WebmixResult(
        representation=representation, num_perm=num_perm, bands=bands, ngram=ngram,
        threshold=threshold, verify=verify, documents=len(docs),
        planted_near=len(near), planted_exact=len(exact),
        recall_near=float(np.mean(near)), recall_exact=float(np.mean(exact)),
        recall_all=float(np.mean(all_pairs)),
        non_planted=len(non_planted), removed_non_planted=len(removed_np),
        false_removals=int(false), false_removal_rate=false / max(1, len(non_planted)),
        removed_exact=n_exact, removed_near=int(removed.sum()) - n_exact,
        min_similarity_removed=float(min(sims)) if sims else 1.0, seconds=seconds,
    )


def main() -> None:
    """Print the figures for the configurations given on the command line."""
    ap = argparse.ArgumentParser(description="webmix dedup recall / false removals")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="the webmix folder (default: ../shared/data/webmix beside the repo)")
    ap.add_argument("--representation", choices=["extracted", "payload"], default="extracted")
    ap.add_argument("--num-perm", type=int, default=120)
    ap.add_argument("--bands", type=int, default=20)
    ap.add_argument("--ngram", type=int, nargs="+", default=[5])
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.8])
    ap.add_argument("--verify", default="exact")
    args = ap.parse_args()
    docs = load_webmix(args.data, args.representation)
    labels = load_labels(args.data)
    for ngram in args.ngram:
        for threshold in args.threshold:
            r = evaluate(docs, labels, args.representation, args.num_perm, args.bands, ngram,
                         threshold, args.verify)
            print(json.dumps(asdict(r)))


if __name__ == "__main__":
    main()
