"""Console scripts (nnU-Net style): every one declared in setup.py is a working CLI."""
from __future__ import annotations

import importlib
import re

import pytest
from conftest import REPO, tool_module

DECLARED = dict(re.findall(r'"(lumbar-[\w-]+)=([\w.]+:\w+)"', (REPO / "setup.py").read_text()))


def _entry(target: str):
    module, function = target.split(":")
    if module.startswith("lumbar_d2.tools."):  # installed from tools/ (setup.py package_dir)
        return getattr(tool_module(module.rsplit(".", 1)[1]), function)
    return getattr(importlib.import_module(module), function)


def test_console_scripts_are_declared() -> None:
    """The tools the README lists as console scripts; the doctor takes no arguments."""
    assert callable(_entry(DECLARED["lumbar-doctor"]))
    assert {"lumbar-convert", "lumbar-train", "lumbar-evaluate", "lumbar-predict",
            "lumbar-export", "lumbar-doctor"} <= set(DECLARED)


@pytest.mark.parametrize("name", sorted(n for n in DECLARED if n != "lumbar-doctor"))
def test_console_script_prints_its_usage(name: str, capsys: pytest.CaptureFixture) -> None:
    """Each entry point takes ``argv`` and is the tool's parser: ``--help`` prints a usage
    line naming the tool and exits 0 (a wrong target would raise or print nothing)."""
    with pytest.raises(SystemExit) as done:
        _entry(DECLARED[name])(["--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")
