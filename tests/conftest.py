"""Shared fixtures: where the real data lives, and capability gates for marked tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets (ml-100k, ml-1m, amazon-beauty); LLMREC_DATA_DIR overrides ../shared/data."""
    root = Path(os.environ.get("LLMREC_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not (root / "ml-100k" / "u.data").is_file():
        pytest.fail(f"real data not found under {root}; set LLMREC_DATA_DIR")
    return root
