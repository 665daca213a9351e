"""bench/gpu_check.sh, the one check a lent GPU machine runs in its 10 minutes: every step runs under its own
budget, the default budgets fit those 10 minutes, and a step past its budget is stopped with its child
processes (a cold vLLM engine core is one) while the next step still runs. A stub interpreter stands in for
Python here, so no GPU is needed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.deploy.parsing import ROOT

SCRIPT = ROOT / "bench" / "gpu_check.sh"
MACHINE_LIMIT_S = 600
PROBES_S = 30  # the two `python -c 'import torch ...'` CUDA probes on a cold machine
STUB_PYTHON = r"""#!/usr/bin/env bash
case "$1" in
    -c) echo "CUDA: stub"; exit 0 ;;                     # both probes: "torch sees a GPU"
    -m) sleep 120 >/dev/null 2>&1 & echo $! > "$STUB_DIR/child.pid"; wait ;;  # hangs with a child (vLLM core)
    bench/gpu_check.py) echo "bench ran"; exit 0 ;;
esac
"""


def test_default_budgets_fit_the_machines_ten_minutes() -> None:
    text = SCRIPT.read_text()
    defaults = {name: int(value) for name, value in re.findall(r"^(\w+_S)=\$\{\1:-(\d+)\}$", text, re.M)}
    runs = re.findall(r'timeout --kill-after="\$(\w+)" "\$(\w+)"', text)
    assert len(runs) == text.count("timeout ") == 2  # the tests and the latency table, nothing unbounded
    worst = sum(defaults[kill] + defaults[budget] for kill, budget in runs) + PROBES_S
    assert worst < MACHINE_LIMIT_S, f"gpu_check.sh may run {worst} s"


def test_a_step_past_its_budget_is_stopped_with_its_children_and_the_next_step_runs(tmp_path: Path) -> None:
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    env = dict(os.environ, PYTHON=str(stub), STUB_DIR=str(tmp_path))
    env.update(TESTS_BUDGET_S="2", KILL_AFTER_S="2", BENCH_BUDGET_S="10")
    start = time.monotonic()
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 20
    assert run.returncode != 0 and "gpu tests: rc=124" in run.stdout  # the timeout is reported, not hidden
    assert "bench ran" in run.stdout
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process_alive(child):
        time.sleep(0.1)
    survived = process_alive(child)
    if survived:
        os.kill(child, signal.SIGKILL)
    assert not survived, "the hung step's child process outlived the budget"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split()[2] == "Z")  # a zombie is already dead
