"""Imports run one way: utils, geometry -> data -> runtime, evaluation, measure -> inference
-> engine -> tools, and the core package never imports a project under projects/."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lumbar_d2"


def _imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute lumbar_d2 module or external root) of every import in ``path``."""
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level]
                yield node.lineno, ".".join(base + ((node.module,) if node.module else ()))
            else:
                yield node.lineno, node.module or ""


def _files(*parts: str):
    root = PACKAGE.joinpath(*parts)
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


# (modules, what they must not import): lower floors never import higher ones
RULES = [(("inference", "measure", "runtime"), ("lumbar_d2.engine", "lumbar_d2.evaluation")),
         (("data", "evaluation", "geometry", "utils"), ("lumbar_d2.inference",
                                                        "lumbar_d2.engine"))]
CASES = [(path, forbidden) for parts, forbidden in RULES for part in parts
         for path in _files(part)]


@pytest.mark.parametrize("path,forbidden", CASES,
                         ids=[p.relative_to(PACKAGE).as_posix() for p, _ in CASES])
def test_imports_run_one_way(path: Path, forbidden: Tuple[str, ...]) -> None:
    bad = [(line, m) for line, m in _imports(path) if m.startswith(forbidden)]
    assert not bad, f"{path.name} imports upward: {bad}"


def test_core_package_never_imports_a_project() -> None:
    bad = [(p.name, line, m) for p in _files("") if p.suffix == ".py"
           for line, m in _imports(p) if m.split(".")[0] in {"torchvision_peer", "projects"}]
    assert not bad


def test_no_module_exceeds_400_lines() -> None:
    long = {p.relative_to(PACKAGE).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long
