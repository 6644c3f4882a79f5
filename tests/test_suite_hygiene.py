"""Rules of the test suite itself, checked by scanning the tests tree.

* Shared data and the repository root come from the ``shared_data`` and ``repo_root``
  fixtures (tests/conftest.py): no test module rebuilds ``../shared/data`` or the root
  from ``__file__``, so the location is defined once and a missing folder skips cleanly.
* A test module imports no other module of the tests tree (test modules, helpers or
  conftest): helpers are fixtures in a ``conftest.py``, and the tree holds only
  ``test_*.py`` and ``conftest.py`` files.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

# a path rebuilt from __file__ (its parents, by index) or the shared-data folder spelled out
_REBUILT_PATH = re.compile(r"""parents\[|["']shared["']\s*/\s*["']data["']|/\s*["']shared["']""")


def rebuilt_paths(source: str) -> list[int]:
    """Line numbers of ``source`` that rebuild the shared-data path or the repository root."""
    return [i for i, line in enumerate(source.splitlines(), 1) if _REBUILT_PATH.search(line)]


def imported_test_modules(source: str, test_modules: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for each import in ``source`` of a module in ``test_modules`` (the
    stems of the tests tree's files), or a relative import."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            continue
        for name in names:
            if name.startswith(".") or name.split(".")[0] in test_modules:
                found.append((node.lineno, name))
    return found


def test_the_scans_find_what_they_look_for() -> None:
    # spelled in pieces so that this file does not match its own scan
    rebuilt = "Path(__file__).resolve().parents" + "[3]" + ".parent /" + ' "shared" /' + ' "data"'
    source = (
        f"SHARED = {rebuilt}\n"
        "import os\nimport model_helpers\nfrom wiki_helpers import wiki_ref_articles\n"
        "from conftest import SHARED\nfrom . import helpers\nimport tokenizer.encoder\n"
        "def f():\n    from test_train import tiny_config\n"
        "DATA = ROOT.parent / " + "'shared'\n"
    )
    assert rebuilt_paths(source) == [1, 10]
    stems = {"model_helpers", "wiki_helpers", "conftest", "test_train"}
    assert imported_test_modules(source, stems) == [
        (3, "model_helpers"), (4, "wiki_helpers"), (5, "conftest"), (6, "."), (9, "test_train")]


def test_tests_use_the_fixtures_and_import_no_test_module(repo_root: Path) -> None:
    tests = repo_root / "tests"
    files = sorted(tests.rglob("*.py"))
    assert len(files) > 20, "the scan no longer sees the tests tree"
    stems = {p.stem for p in files}
    helpers, rebuilt, imports = [], {}, {}
    for path in files:
        name = path.relative_to(repo_root).as_posix()
        if path.name != "conftest.py" and not path.name.startswith("test_"):
            helpers.append(name)
        source = path.read_text(encoding="utf-8")
        if path.name != "conftest.py" and (lines := rebuilt_paths(source)):
            rebuilt[name] = lines
        if found := imported_test_modules(source, stems):
            imports[name] = found
    assert not helpers, f"helper modules in the tests tree (make them conftest fixtures): {helpers}"
    assert not rebuilt, ("paths rebuilt from __file__ or ../shared/data spelled out (use the "
                         f"shared_data / repo_root fixtures), file: lines {rebuilt}")
    assert not imports, f"test modules import modules of the tests tree (file: imports) {imports}"
