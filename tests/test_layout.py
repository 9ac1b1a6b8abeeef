"""The shape of the code: layers point one way (the library runs without Ray), functions and
modules stay short, spconv is imported in one module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sparse_det", "data_tools", "ray_jobs")
CODE_DIRS = (*PACKAGES, "bench", "tests")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400  # STYLE.md: files stay small (about 400 lines at most)


def _modules(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(REPO).with_suffix("").parts)
                  for p in (REPO / package).rglob("*.py") if p.name != "__init__.py")


def test_library_imports_without_ray():
    """Every module of sparse_det and data_tools, command lines included, imports with `ray`
    and `ray_jobs` made unimportable: only code inside a command line's main may hand off
    to ray_jobs."""
    modules = _modules("sparse_det") + _modules("data_tools")
    code = (
        "import sys, importlib, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'ray_jobs'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print('imported', len(sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(modules) > 25, modules


def _functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("package", CODE_DIRS)
def test_no_function_is_longer_than_60_lines(package):
    long = [f"{p.relative_to(REPO)}:{line} {name} ({n} lines)"
            for p in sorted((REPO / package).rglob("*.py"))
            for name, line, n in _functions(p) if n > MAX_FUNCTION_LINES]
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_no_library_module_is_longer_than_400_lines():
    """The library's modules (tests and bench scripts aside): a module past it holds two
    things, and is split where they part."""
    long = [f"{p.relative_to(REPO)} ({n} lines)" for package in PACKAGES
            for p in sorted((REPO / package).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "modules over 400 lines:\n" + "\n".join(long)


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_spconv_is_imported_in_one_module():
    importers = sorted(str(p.relative_to(REPO)) for pkg in PACKAGES
                       for p in (REPO / pkg).rglob("*.py")
                       if any(n.split(".")[0] == "spconv" for n in _imported(p)))
    assert importers == ["sparse_det/model/spconv_compat.py"], importers


def test_command_lines_start_without_torch():
    """`--help`, argument errors and bad-input errors must answer at once: the command-line
    modules import neither torch nor spconv until a model is built."""
    clis = ["sparse_det.infer", "sparse_det.tune", "sparse_det.train", "sparse_det.visualize",
            "sparse_det.finetune",
            "sparse_det.evaluate", "sparse_det.demo", "data_tools.sparsify", "data_tools.info",
            "ray_jobs.train", "ray_jobs.preprocess"]
    code = ("import importlib, sys\n"
            f"for m in {clis!r}:\n"
            "    importlib.import_module(m)\n"
            "heavy = sorted(m for m in ('torch', 'spconv', 'ray') if m in sys.modules)\n"
            "print(heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", f"imported at start-up: {res.stdout}"
