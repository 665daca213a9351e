"""bench/demo_eval.py reads `make demo`'s step lines (deploy/demo.sh's `step` format) into step durations."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from tests.deploy.parsing import ROOT


def _demo_eval():
    sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import their `portable` helper by name
    try:
        spec = importlib.util.spec_from_file_location("demo_eval", ROOT / "bench" / "demo_eval.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_step_lines_of_a_demo_log_become_durations(tmp_path: Path) -> None:
    bold, reset = "\033[1m", "\033[0m"
    log = tmp_path / "demo.log"
    log.write_text(
        f"{bold}== 03:12:36 +0m00s  llmrec demo: builds work/bundle{reset}\n"
        "epoch 3:  50%|#####     | 1/2 [00:01<00:01]\r progress bar noise\n"
        f"{bold}== 03:13:10 +0m34s  train LLM-SRec{reset}\n"
        f"{bold}== 03:28:17 +15m41s  A-LLMRec stage 1{reset}\n"
        f"{bold}== 03:33:17 +20m41s  serve work/bundle-ml-100k{reset}\n"
    )
    steps = _demo_eval().step_times(log)
    assert [s["step"] for s in steps] == [
        "llmrec demo: builds work/bundle",
        "train LLM-SRec",
        "A-LLMRec stage 1",
        "serve work/bundle-ml-100k",
    ]
    assert [s["start_s"] for s in steps] == [0, 34, 941, 1241]
    assert [s["seconds"] for s in steps] == [34, 907, 300, None]


def test_the_step_format_it_parses_is_the_one_demo_sh_prints() -> None:
    script = (ROOT / "deploy" / "demo.sh").read_text()
    step_line = r"printf '\\n\\033\[1m== %s \+%dm%02ds  %s"
    assert re.search(step_line, script), "deploy/demo.sh changed its step line"
