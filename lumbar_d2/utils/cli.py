"""What the tools' command lines share: the fixed part of the parser and the error contract.

Every tool takes ``--config-file``, ``--output``, ``-v`` and trailing ``KEY VALUE`` config
overrides, and reports a :class:`LumbarError` as one ``error: ...`` line with exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from typing import Callable, Iterator

from .errors import LumbarError


def tool_parser(doc: str, config_help: str, output_help: str) -> argparse.ArgumentParser:
    """Parser with the tool's summary (``doc`` up to the first blank line), config and output."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help=config_help)
    p.add_argument("--output", required=True, help=output_help)
    return p


def add_tail(p: argparse.ArgumentParser, opts_help: str) -> None:
    """``-v/--verbose`` and the trailing config overrides (always the last arguments)."""
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help=opts_help)


def run_tool(body: Callable[[], int], verbose: bool) -> int:
    """Configure logging, run ``body``; a :class:`LumbarError` becomes one line and exit 2,
    Ctrl-C one line and exit 130."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with sigterm_as_interrupt():
            return body()
    except LumbarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted()


def interrupted() -> int:
    """Ctrl-C: one line, exit 130 (128 + SIGINT); writers are atomic, so no partial file."""
    print("error: interrupted (Ctrl-C); no partial file was written", file=sys.stderr)
    return 130


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (``kill``, a scheduler stopping a job) as Ctrl-C for the block.

    By default SIGTERM ends Python at once: no ``finally``, no tables for what was done,
    and a folder mixing two runs. As a KeyboardInterrupt it takes the Ctrl-C path instead.
    Outside the main thread (where signals cannot be handled) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def native_stderr_logged(log: logging.Logger) -> Iterator[None]:
    """Log at DEBUG, instead of printing, what native code writes to file descriptor 2 in
    the block (e.g. libjpeg's "Invalid JPEG file structure" from GDCM on corrupt pixel
    data): those lines bypass Python, would break the one-line error contract, and the
    failure is reported in a line of its own. Wrap only the native call: whatever Python
    writes to stderr in the block is caught too.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("native library output: %s", " | ".join(text.splitlines()))
