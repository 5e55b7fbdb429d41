"""Imports run one way, and no module is longer than 400 lines.

Every module of the package sits on a floor (the README's chain: ``utils``, ``compat``,
``config`` -> ``geometry``, ``modeling`` -> ``data`` -> ``runtime``, ``evaluation``,
``measure`` -> ``model_zoo``, ``inference`` -> ``engine`` -> ``demo``, ``doctor`` ->
``tools``). A module may import its own unit (its subpackage or itself) and units on lower
floors only: two units of one floor never import each other. ``projects/`` sit above
everything: a project may import the library and itself, never another project, and nothing
in the library or ``tools/`` imports a project. :func:`violations` checks a whole checkout;
the mutation tests run it on a scratch copy with an upward import added, so the checker
itself is tested.
"""
from __future__ import annotations

import ast
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400

# unit of lumbar_d2 -> floor; a new module must be added here (test_every_module_has_a_floor)
FLOORS: Dict[str, int] = {
    "lumbar_d2": 0, "utils": 0, "compat": 0, "config": 0,
    "geometry": 1, "modeling": 1,
    "data": 2,
    "runtime": 3, "evaluation": 3, "measure": 3,
    "inference": 4, "model_zoo": 4,  # the zoo loads configs with runtime.load_config
    "engine": 5,
    "demo": 6, "doctor": 6,
    "tools": 7,
}
PROJECT_FLOOR = 8


def _module_name(path: Path, root: Path) -> Tuple[str, ...]:
    """Dotted parts of a module: ``tools/x.py`` is ``lumbar_d2.tools.x`` (as installed)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ("lumbar_d2",) + parts if parts[0] == "tools" else parts


def imports(path: Path, root: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute dotted name) of everything ``path`` imports, at any depth.

    ``from X import a`` yields ``X.a`` (``a`` may be a submodule: ``from .. import engine``
    must count as importing ``lumbar_d2.engine``); relative imports are resolved against the
    module's own package.
    """
    return iter(_imports_of(path.read_text(), _module_name(path, root)))


@functools.lru_cache(maxsize=None)
def _imports_of(text: str, here: Tuple[str, ...]) -> Tuple[Tuple[int, str], ...]:
    """:func:`imports` of a module's text (cached: the checker runs once per mutation)."""
    return tuple(_walk_imports(ast.parse(text), here))


def _walk_imports(tree: ast.AST, here: Tuple[str, ...]) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[:len(here) - node.level]
                                + ((node.module,) if node.module else ()))
            else:
                base = node.module or ""
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"


def unit_of(name: str) -> Optional[str]:
    """The :data:`FLOORS` unit of a dotted ``lumbar_d2`` name; None for anything else."""
    parts = name.split(".")
    if parts[0] != "lumbar_d2":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS else "lumbar_d2"


def project_names(root: Path) -> Dict[str, Set[str]]:
    """Project folder -> the top-level import names it defines (its packages and scripts)."""
    out: Dict[str, Set[str]] = {}
    for project in sorted(p for p in (root / "projects").glob("*") if p.is_dir()):
        names = {project.name}
        for path in project.rglob("*.py"):
            parts = path.relative_to(project).parts
            names.add(path.stem if parts[0] == "tools" else parts[0].removesuffix(".py"))
        out[project.name] = names
    return out


def library_files(root: Path) -> List[Path]:
    """Every module of the package and of ``tools/``."""
    return sorted((root / "lumbar_d2").rglob("*.py")) + sorted((root / "tools").glob("*.py"))


def project_files(root: Path) -> List[Path]:
    return sorted((root / "projects").rglob("*.py"))


def _allowed(own: str, unit: str) -> bool:
    """May a module of unit ``own`` import unit ``unit``? (The package root, imported by
    every module anyway, itself imports floor 0 only.)"""
    if unit in (own, "lumbar_d2"):
        return True
    if own == "lumbar_d2":
        return FLOORS[unit] == 0
    return FLOORS[unit] < FLOORS[own]


def _library_problems(path: Path, root: Path, projects: Set[str]) -> Iterator[str]:
    parts = _module_name(path, root)
    if len(parts) > 1 and parts[1] not in FLOORS and parts[1] != "__init__":
        yield f"{path}: module {'.'.join(parts)} has no floor in FLOORS"
        return
    own = unit_of(".".join(parts))
    for line, name in imports(path, root):
        unit = unit_of(name)
        if name.split(".")[0] in projects | {"projects"}:
            yield f"{path}:{line}: imports project code {name}"
        elif unit is not None and not _allowed(own, unit):
            yield (f"{path}:{line}: {own} (floor {FLOORS[own]}) imports {name} "
                   f"({unit}, floor {FLOORS[unit]})")


def _project_problems(path: Path, root: Path, names: Dict[str, Set[str]]) -> Iterator[str]:
    project = path.relative_to(root / "projects").parts[0]
    others = set().union(*(v for k, v in names.items() if k != project)) - names[project]
    for line, name in imports(path, root):
        if name.split(".")[0] in others:
            yield f"{path}:{line}: project {project} imports another project's {name}"


def violations(root: Path) -> List[str]:
    """Every upward or cross-project import and every over-long module under ``root``."""
    names = project_names(root)
    all_project_names = set().union(*names.values()) if names else set()
    problems: List[str] = []
    for path in library_files(root):
        problems += _library_problems(path, root, all_project_names)
    for path in project_files(root):
        problems += _project_problems(path, root, names)
    for path in library_files(root) + project_files(root):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            problems.append(f"{path}: longer than {MAX_LINES} lines; split it")
    return problems


# ------------------------------------------------------------------------------ the checkout
def test_this_checkout_has_no_violations() -> None:
    problems = violations(REPO)
    assert not problems, "\n".join(problems)


def test_every_module_has_a_floor() -> None:
    """A new top-level module must be placed on a floor, not silently left unchecked."""
    units = {p.stem if p.is_file() else p.name for p in (REPO / "lumbar_d2").iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())} - {"__init__"}
    assert units <= set(FLOORS), units - set(FLOORS)
    assert library_files(REPO) and project_files(REPO)


# ------------------------------------------------------------------------------ the checker
@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package, tools and projects to mutate."""
    root = tmp_path_factory.mktemp("scratch")
    for part in ("lumbar_d2", "tools", "projects"):
        shutil.copytree(REPO / part, root / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def _mutated(scratch: Path, module: Path, line: str) -> List[str]:
    """Violations that ``line`` appended to ``module`` adds (the checkout's own ones are
    test_this_checkout_has_no_violations' business); the copy is restored."""
    original = module.read_text()
    before = set(violations(scratch))
    module.write_text(original + "\n" + line + "\n")
    try:
        return [v for v in violations(scratch) if v not in before]
    finally:
        module.write_text(original)


def _modules(part: str) -> List[str]:
    return [p.name for p in sorted((REPO / "lumbar_d2" / part).glob("*.py"))]


@pytest.mark.parametrize("name", _modules("inference"))
def test_checker_catches_inference_importing_engine(scratch: Path, name: str) -> None:
    module = scratch / "lumbar_d2" / "inference" / name
    problems = _mutated(scratch, module, "from .. import engine")
    assert len(problems) == 1 and str(module) in problems[0] and "lumbar_d2.engine" in problems[0]


@pytest.mark.parametrize("name", _modules("data"))
def test_checker_catches_data_importing_evaluation(scratch: Path, name: str) -> None:
    module = scratch / "lumbar_d2" / "data" / name
    problems = _mutated(scratch, module, "from ..evaluation import metrics")
    assert len(problems) == 1 and "lumbar_d2.evaluation.metrics" in problems[0]


@pytest.mark.parametrize("module,line", [
    ("geometry.py", "import lumbar_d2.data"),            # absolute, one floor up
    ("measure.py", "from .evaluation import metrics"),   # a sibling of the same floor
    ("model_zoo/model_zoo.py", "from ..inference.predictor import LumbarPredictor"),  # same floor
    ("config.py", "from lumbar_d2 import runtime"),
    ("doctor.py", "from lumbar_d2.tools import predict"),
    ("utils/io.py", "def f():\n    from ..geometry import bbox"),  # inside a function
    ("runtime.py", "import torchvision_peer"),           # the library imports a project
])
def test_checker_catches_other_upward_imports(scratch: Path, module: str, line: str) -> None:
    assert len(_mutated(scratch, scratch / "lumbar_d2" / module, line)) == 1


def test_checker_on_tools_and_projects(scratch: Path) -> None:
    tool = scratch / "tools" / "predict.py"
    assert "imports project code" in _mutated(scratch, tool, "import torchvision_peer")[0]
    study = scratch / "projects" / "CpuStudy" / "run_study.py"
    assert _mutated(scratch, study, "import lumbar_d2.engine") == []  # projects use the library
    assert "another project" in _mutated(scratch, study, "from torchvision_peer import x")[0]
    long = "\n".join(["x = 1"] * MAX_LINES)
    assert "lines" in _mutated(scratch, study, long)[0]  # the cap covers projects too


def test_volume_path_does_not_import_detectron2() -> None:
    """The model-free volume path (read, slice, link, measure, draw, write) runs with any
    slice predictor; importing it must not pull in Detectron2 (nor torch with it)."""
    code = ("import sys, lumbar_d2.inference.series, lumbar_d2.inference.report; "
            "print(sorted(m for m in ('detectron2', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
