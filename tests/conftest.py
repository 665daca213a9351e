"""Shared fixtures: where the real data lives, and one clear stop when a run needs it and it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


DATA_FIXTURE = "shared_data_dir"


def data_root() -> Path:
    """LLMREC_DATA_DIR, else the shared data beside the checkout (../shared/data)."""
    return Path(os.environ.get("LLMREC_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def missing_data_message(root: Path) -> str | None:
    if (root / "ml-100k" / "u.data").is_file():
        return None
    return (
        f"the real datasets are not under {root} (no ml-100k/u.data): set LLMREC_DATA_DIR to the directory "
        "holding ml-100k, ml-1m and amazon-beauty (`llmrec data download NAME` fetches them)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A run that selects tests reading the real datasets stops before any test, with one message naming
    LLMREC_DATA_DIR, when they are missing: one clear failure (never a skip), not one error per test."""
    if not any(DATA_FIXTURE in getattr(item, "fixturenames", ()) for item in items):
        return
    message = missing_data_message(data_root())
    if message is not None:
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets (ml-100k, ml-1m, amazon-beauty); LLMREC_DATA_DIR overrides ../shared/data."""
    root = data_root()
    message = missing_data_message(root)
    if message is not None:  # only when the collection hook above did not run (e.g. a plugin reordered)
        pytest.fail(message)
    return root
