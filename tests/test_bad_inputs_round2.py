"""Bad inputs, round two (issue #15): hangs, silent wrong data, and tracebacks.

The contract is the one of ``test_bad_inputs.py``: a bad case exits 2 with exactly one
``error: ...`` line naming the file or key, and writes nothing. Cases that used to hang run
with a time limit.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from lumbar_d2.utils.io import write_text


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    """atomic_path's mkstemp makes 0600 files; outputs must be readable like plain files."""
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "out" / "a.json", "{}")
        os.umask(0o077)
        private = write_text(tmp_path / "out" / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
