"""Tokenizer test fixtures, and which tests a machine without the encoder's packages runs.

Most tokenizer tests need the encoder's dependencies (regex, tiktoken, tqdm). A GPU machine
has only torch, numpy and pyarrow: there every test module but the token stream's (which
model/ depends on and which needs only numpy and pyarrow) is left out of collection, with
one line in the summary saying why.

The sample texts (real Wikipedia and Tatoeba text, code, emoji, specials) are built on
demand from the shared data folder; a test with a ``sample_name`` argument runs once per
sample.
"""

from __future__ import annotations

import gzip
import importlib.util
import inspect
import json
import json.decoder
from collections.abc import Callable
from pathlib import Path

import pytest

_ENCODER_DEPS = ("regex", "tiktoken", "tqdm")
_LIGHT = {"test_token_stream.py"}  # needs only numpy and pyarrow (and torch, for model.data)
MISSING = [name for name in _ENCODER_DEPS if importlib.util.find_spec(name) is None]

collect_ignore = (
    [p.name for p in Path(__file__).parent.glob("test_*.py") if p.name not in _LIGHT]
    if MISSING
    else []
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the missing packages when tokenizer tests were left out."""
    if MISSING:
        terminalreporter.write_line(
            f"tests/tokenizer: only {', '.join(sorted(_LIGHT))} collected; "
            f"{', '.join(MISSING)} not installed"
        )


EOT = "<|endoftext|>"


def _tatoeba(shared: Path, codes: set[str]) -> str:
    """Tatoeba sentences whose CLD2 code is in `codes`, newline-joined."""
    lines = (shared / "langid" / "tatoeba_long_cld2.tsv").read_text(encoding="utf-8").splitlines()
    return "\n".join(line.split("\t")[3] for line in lines[1:] if line.split("\t")[0] in codes)


def _wiki(shared: Path, n: int) -> str:
    """The first `n` held-out Wikipedia articles, EOT-joined."""
    texts = []
    with gzip.open(shared / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    return EOT.join(texts)


_SAMPLES: dict[str, Callable[[Path], str]] = {
    "english": lambda shared: _wiki(shared, 12),
    "german": lambda shared: _tatoeba(shared, {"de"}) + "\nGrüße aus München, Straße, Öl, Äpfel.",
    "chinese": lambda shared: _tatoeba(shared, {"zh", "zh-Hant", "ja"}),
    "many_scripts": lambda shared: _tatoeba(
        shared, {"ru", "ar", "th", "hi", "ko", "el", "he", "ta", "am"}
    ),
    "code": lambda shared: inspect.getsource(json.decoder),
    "emoji": lambda shared: "Emoji 🤗👍🏽🇩🇪 family 👨‍👩‍👧‍👦, flags 🏳️‍🌈 and ✔︎ ❤️ done 🙂",
    "whitespace": lambda shared: "a  \n\n  b\t\t\n \r\n x   " + EOT + "  \n" + EOT + EOT + "  ",
    "specials": lambda shared: f"{EOT}start{EOT}middle {EOT} end{EOT}",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test that takes ``sample_name`` once per sample, in name order."""
    if "sample_name" in metafunc.fixturenames:
        metafunc.parametrize("sample_name", sorted(_SAMPLES))


@pytest.fixture(scope="session")
def sample(shared_data: Path) -> Callable[[str], str]:
    """``name -> text`` of a sample (names: see ``_SAMPLES``)."""
    return lambda name: _SAMPLES[name](shared_data)


@pytest.fixture(scope="session")
def wiki(shared_data: Path) -> Callable[[int], str]:
    """``n -> `` the first `n` held-out Wikipedia articles, EOT-joined."""
    return lambda n: _wiki(shared_data, n)
