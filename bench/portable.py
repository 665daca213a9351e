"""What a bench result records about paths: relative to the repository, or named by the root they sit
under ($LLMREC_DATA_DIR, $TMPDIR, ~), never an absolute path of the machine that ran it. Imported by the
bench scripts, which run as `python bench/NAME.py` (this directory is then on sys.path)."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _roots() -> list[tuple[str, Path]]:
    data = Path(os.environ.get("LLMREC_DATA_DIR", REPO.parent / "shared" / "data"))
    return [("$LLMREC_DATA_DIR", data), ("$TMPDIR", Path(tempfile.gettempdir())), ("~", Path.home())]


def portable_path(path: str | Path) -> str:
    """`path` relative to the repository when inside it, else relative to the first root that holds it, else
    only its name under `<elsewhere>`; a relative path is taken as relative to the current directory."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_relative_to(REPO):
        return resolved.relative_to(REPO).as_posix() or "."
    for label, root in _roots():
        root = root.expanduser().resolve()
        if resolved.is_relative_to(root):
            return f"{label}/{resolved.relative_to(root).as_posix()}"
    return f"<elsewhere>/{resolved.name}"


def portable_args(args: argparse.Namespace) -> dict[str, str]:
    """Every argument as a string, paths made portable."""
    return {k: portable_path(v) if isinstance(v, Path) else str(v) for k, v in vars(args).items()}


def portable_command(argv: Sequence[str], python: str = "python") -> str:
    """The command line as it could be typed again from the repository root: the script and every
    absolute-path argument (alone or after `--flag=`) made portable."""

    def word(arg: str) -> str:
        flag, eq, value = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
        return f"{flag}{eq}{portable_path(value)}" if value.startswith(("/", "~")) else arg

    script = portable_path(argv[0]) if argv else ""
    return " ".join([python, script, *(word(a) for a in argv[1:])])
