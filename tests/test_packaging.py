"""Console scripts (nnU-Net style) declared in setup.py resolve to the tools' entry functions."""
from __future__ import annotations

import re

from conftest import REPO, tool_module

EXPECTED = {"lumbar-convert": ("convert_dataset", "main"), "lumbar-train": ("train_net", "entry"),
            "lumbar-evaluate": ("evaluate", "main"), "lumbar-predict": ("predict", "main"),
            "lumbar-export": ("export_model", "main"),
            "lumbar-collect-results": ("collect_results", "main")}


def test_console_scripts_point_at_the_tools() -> None:
    declared = dict(re.findall(r'"(lumbar-[\w-]+)=([\w.:]+)"', (REPO / "setup.py").read_text()))
    for name, (tool, function) in EXPECTED.items():
        assert declared.get(name) == f"lumbar_d2.tools.{tool}:{function}", name
        assert callable(getattr(tool_module(tool), function))
