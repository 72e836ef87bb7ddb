"""The shape of the code base, read from the real tree with `ast`: imports flow one way, files and
functions stay small, and comments carry no work-log history.

Why a test: these are the properties a reader relies on (a module of `models.nn` never needs the
INT8 kernels to be understood; `pip install` does not need loadtest/), and each is lost one
convenient import or one appended paragraph at a time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("models", "service", "loadtest", "benchmarks")  # the trees whose size and comments are checked
# The layers of `models`, earliest first: a module may import only its own layer or an earlier one.
LAYERS = {"errors": 0, "hardware": 0, "nn": 1, "data": 2, "infer": 3, "train": 4, "search": 5, "cli": 6}
NEVER_IMPORTED = {  # package -> the top-level packages it must not import
    "models": {"service", "loadtest", "benchmarks", "tests"},
    "service": {"loadtest", "benchmarks", "tests"},  # the wheel ships models and service only
}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# Functions that are tables of data and may run longer, as "path::qualname"; each needs a reason.
LONG_DATA_TABLES: frozenset[str] = frozenset()
HISTORY = re.compile(r"\bsessions?[\s_-]*\d", re.IGNORECASE)


def python_files(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Every module `path` imports (see `imports_in`)."""
    name = module_name(path)
    yield from imports_in(path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0])


def imports_in(source: str, package: str) -> Iterator[str]:
    """Every module `source` (a module of `package`) imports, anywhere in it: lazy and
    TYPE_CHECKING imports count too, relative ones are resolved, and `from pkg import name`
    yields `pkg.name` as well as `pkg`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def layer_of(module: str) -> int | None:
    """The layer of a module of `models` (None for `models` itself, which holds no code)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_part_of_models_has_a_layer() -> None:
    parts = {module_name(p).split(".")[1] for p in python_files("models") if module_name(p) != "models"}
    assert parts == set(LAYERS), f"place these in LAYERS (or drop the stale ones): {parts ^ set(LAYERS)}"


@pytest.mark.parametrize("package", sorted(NEVER_IMPORTED))
def test_imports_flow_one_way(package: str) -> None:
    found = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in python_files(package)
        for module in set(imported_modules(path))
        if module.split(".")[0] in NEVER_IMPORTED[package]
    ]
    assert python_files(package) and not found, "\n".join(sorted(found))


def test_models_import_only_their_own_layer_or_earlier() -> None:
    found = []
    for path in python_files("models"):
        own = layer_of(module_name(path))
        for module in set(imported_modules(path)):
            theirs = layer_of(module) if module.split(".")[0] == "models" else None
            if own is not None and theirs is not None and theirs > own:
                found.append(f"{path.relative_to(REPO)} (layer {own}) imports {module} (layer {theirs})")
    assert not found, "\n".join(sorted(found))


def test_no_file_is_over_the_limit() -> None:
    found = [
        f"{path.relative_to(REPO)}: {lines} lines"
        for path in python_files(*CHECKED)
        if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert not found, "\n".join(found)


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def test_no_function_is_over_the_limit() -> None:
    found = []
    for path in python_files(*CHECKED):
        for name, node in functions(ast.parse(path.read_text(), str(path))):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            where = f"{path.relative_to(REPO)}::{name}"
            if lines > MAX_FUNCTION_LINES and where not in LONG_DATA_TABLES:
                found.append(f"{where}: {lines} lines")
    assert not found, "\n".join(found)


def test_comments_carry_no_work_log_history() -> None:
    """What a comment says stays true; which session found it belongs in docs/journal/."""
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in python_files(*CHECKED)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_checks_see_what_they_check() -> None:
    """The readers above find relative imports, lazy ones, nested functions, and history in any spelling."""
    assert "models.infer.checkpoint.Checkpoint" in set(imported_modules(REPO / "models" / "infer" / "reader.py"))
    lazy = "def f():\n    from ..nn import transformer\n    from . import packing\n"
    assert {"models.nn.transformer", "models.infer.packing"} <= set(imports_in(lazy, "models.infer"))
    assert layer_of("models.nn.transformer") == 1 and layer_of("models.cli.main") == 6 and layer_of("models") is None
    nested = "class A:\n    def b(self):\n        def c(): ...\n"
    assert [name for name, _ in functions(ast.parse(nested))] == ["A.b", "A.b.c"]
    assert all(HISTORY.search(text) for text in ("session 12", "Session-20", "sessions 13-15", "(session 5,"))
    assert not HISTORY.search("a working session") and not HISTORY.search("httpx.Session()")
