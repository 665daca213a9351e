"""Training configs are frozen dataclasses whose fields carry their own CLI help text; `training.cli_options`
turns every field into a `--flag` with that help."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def flag(default: Any, help_text: str) -> Any:
    """A dataclass field with a default and the help its CLI flag shows."""
    return field(default=default, metadata={"help": help_text})


def required_flag(help_text: str) -> Any:
    """A dataclass field without a default: its CLI flag must be given."""
    return field(metadata={"help": help_text})
