"""`llmrec serve`: faiss's loader, which logs at INFO every CPU build it could not load ("Could not load
library with AVX512 support"), stays quiet at the default log level; a bad bundle still says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_serve_starts_without_faiss_loader_noise(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMREC_")}
    result = subprocess.run(
        [sys.executable, "-m", "llmrec.cli", "serve", "--bundle", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "is not a directory" in output, output
    assert "faiss" not in output and "AVX" not in output, output
