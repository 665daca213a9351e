"""Training and item-table precompute under 2 CPU processes (gloo) give one process's results: the same
weights, item table, losses and metrics up to float tolerance. Children are started as torchrun would
(RANK, WORLD_SIZE, MASTER_ADDR/PORT; tests/training/distributed_workers.py), or by torchrun for the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT
from tests.models.tiny_llm import one_torch_thread, tiny_llm
from tests.training.distributed_workers import (
    LLM_USERS,
    N_USERS,
    TORCH_ENV,
    WORLD,
    fresh_encoder,
    gradients,
    llmsrec_config,
    sasrec_config,
    spawned,
    train_llmsrec_worker,
    train_sasrec_worker,
)
from tests.training.test_sasrec_train import toy_data
from training.common import distributed
from training.common.errors import ConfigError
from training.llmsrec import train as llmsrec_train
from training.llmsrec.item_table import compute_item_table
from training.llmsrec.train import train_llmsrec
from training.sasrec.train import train_sasrec


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    for name in TORCH_ENV:  # the one-process runs must not think they are under torchrun
        monkeypatch.delenv(name, raising=False)
    with one_torch_thread():
        yield


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key


def assert_same_sasrec(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], lr: float, steps: int) -> None:
    """Equal weights, except the attention key biases: softmax ignores them, so their true gradient is 0
    and Adam turns rounding noise into steps of up to ~lr. Bound those; they cannot change any output."""
    hidden = a["item_emb.weight"].shape[1]
    for key in [k for k in a if k.endswith("attn.qkv.bias")]:
        keys_a, keys_b = a[key][hidden : 2 * hidden].clone(), b[key][hidden : 2 * hidden].clone()
        assert (keys_a - keys_b).abs().max() <= 2 * lr * steps, key
        a[key][hidden : 2 * hidden], b[key][hidden : 2 * hidden] = 0.0, 0.0
    assert_same_tensors(a, b)


def assert_same_history(one: list[dict], two: list[dict], keys: tuple[str, ...]) -> None:
    assert len(one) == len(two)
    for h1, h2 in zip(one, two, strict=True):
        for key in keys:
            assert h1[key] == pytest.approx(h2[key], rel=1e-4, abs=1e-6), key


def test_sasrec_two_processes_match_one(tmp_path) -> None:
    """(The children also check the collective helpers first: distributed_workers.check_helpers.)"""
    root, config = tmp_path / "data", sasrec_config()
    with spawned(train_sasrec_worker, root, tmp_path / "two"):
        one = train_sasrec(toy_data(root, N_USERS), config, tmp_path / "one")
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "two"))
    assert_same_sasrec(a, b, config.lr, steps=config.epochs * -(-N_USERS // config.batch_size))
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "two"))
    assert_same_history(h1, h2, ("loss",))
    assert_same_history([h["valid"] for h in h1], [h["valid"] for h in h2], ("ndcg@10", "hr@10", "mrr"))
    meta = json.loads((tmp_path / "two" / "config.json").read_text())
    assert meta["train"]["world_size"] == WORLD and meta["best_epoch"] == one["best_epoch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one", "two"]  # no rank-1 leftovers


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    with one_torch_thread():
        train_sasrec(toy_data(root / "data", LLM_USERS), sasrec_config(epochs=1), root / "sasrec")
    return root / "data", root / "sasrec"


def test_llmsrec_and_item_table_two_processes_match_one(tmp_path, teacher_dir, monkeypatch) -> None:
    root, sasrec_dir = teacher_dir
    monkeypatch.setattr(llmsrec_train, "load_llm", lambda *a, **k: tiny_llm(seed=0))
    config = llmsrec_config()
    with spawned(train_llmsrec_worker, root, sasrec_dir, tmp_path / "two"):
        encoder, teacher, data = fresh_encoder(root, sasrec_dir)
        table = compute_item_table(encoder, data.n_items, batch_size=16, progress=False)
        steps = [gradients(encoder, teacher, data, n) for n in (5, 1)]  # 1 user: rank 1's shard is empty
        train_llmsrec(toy_data(root, LLM_USERS), sasrec_dir, config, tmp_path / "one")

    # each rank computed the very batches one process computes: the item table is bit-identical
    np.testing.assert_array_equal(np.load(tmp_path / "table.npy"), table)
    # sharded gradients sum to the one-process gradient; the LLM's forward on a shard differs from the
    # forward on the whole batch by ~1e-7 (other padding), which cancellation in the gradients amplifies
    grads = load_file(tmp_path / "grads.safetensors")
    assert grads.keys() == steps[0][1].keys() | steps[1][1].keys()
    for key, grad in (steps[0][1] | steps[1][1]).items():
        assert (grad - grads[key]).abs().max() <= 1e-4 * grad.abs().max() + 2e-7, key
    for (p1, _), p2 in zip(steps, json.loads((tmp_path / "parts.json").read_text()), strict=True):
        assert p1 == pytest.approx(p2, rel=1e-5, abs=1e-7)
    # a whole Adam run: the same losses and metrics; weights within Adam's rounding-noise bound (weights
    # with a ~zero true gradient, e.g. pred_item's output bias that cross-entropy ignores, take ~lr steps)
    one, two = tmp_path / "one", tmp_path / "two"
    steps = config.epochs * -(-LLM_USERS // config.batch_size)
    a, b = load_file(one / "heads.safetensors"), load_file(two / "heads.safetensors")
    assert all((a[k] - b[k]).abs().max() <= 2 * config.lr * steps for k in a) and a.keys() == b.keys()
    h1, h2 = (json.loads((d / "history.json").read_text()) for d in (one, two))
    keys = ("loss", "retrieval", "distill", "uniformity")
    assert_same_history([h["train"] for h in h1], [h["train"] for h in h2], keys)
    assert_same_history([h["valid"] for h in h1], [h["valid"] for h in h2], ("hr@10", "ndcg@10", "mrr"))
    assert (two / "train_state.pt").is_file() and not list(two.glob(".*tmp*"))


def test_one_process_helpers_are_no_ops() -> None:
    with distributed.session("auto") as info:
        assert (info.rank, info.world, info.device) == (0, 1, "cpu") and not dist.is_initialized()
        p = torch.nn.Parameter(torch.ones(2))
        p.grad = torch.tensor([1.0, 2.0])
        extra = torch.tensor([0.5])
        assert distributed.all_reduce_grads([p], extra) is extra and p.grad.tolist() == [1.0, 2.0]
        assert distributed.shard(7) == slice(0, 7) and distributed.rank_seed(42) == 42
    assert distributed.shard_sizes(7, 2) == [4, 3] and distributed.shard_sizes(1, 2) == [1, 0]
    assert distributed.shard_sizes(0, 3) == [0, 0, 0]


@pytest.mark.parametrize(
    ("env", "device", "message"),
    [
        ({"WORLD_SIZE": "2", "RANK": "0"}, "cpu", "MASTER_ADDR, MASTER_PORT unset"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "cpu", "RANK=2 and WORLD_SIZE=2 are inconsistent"),
        ({"WORLD_SIZE": "two"}, "cpu", "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "cuda:1", "pass cuda or auto"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "cuda", "LOCAL_RANK 1 but only 1 CUDA"),
    ],
)
def test_bad_launch_environment_is_named(monkeypatch, env, device, message) -> None:
    monkeypatch.setattr(distributed, "resolve_device", lambda d: d)  # pretend CUDA exists
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message), distributed.session(device):
        pass


def test_torchrun_cli_trains_sasrec_like_one_process(tmp_path, shared_data_dir) -> None:
    from training.data.dataset import load_prepared
    from training.data.prepare import PrepareConfig, prepare_dataset

    data_dir = prepare_dataset(PrepareConfig(dataset="ml-100k"), shared_data_dir / "ml-100k", tmp_path / "d")
    config = sasrec_config(max_len=20, batch_size=128, epochs=1, eval_max_users=200, l2=0.0)
    flags = {"hidden": 16, "max-len": 20, "epochs": 1, "eval-every": 1, "batch-size": 128, "dropout": 0.0}
    flags |= {"eval-max-users": 200, "num-threads": 1}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD)]
    cmd += ["-m", "llmrec", "train", "sasrec", "--data", str(data_dir), "--out", str(tmp_path / "two")]
    cmd += [*(a for k, v in flags.items() for a in (f"--{k}", str(v))), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV} | {"OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (run.stdout + run.stderr).count('"best_epoch"') == 1  # one summary, from rank 0
    train_sasrec(load_prepared(data_dir), config, tmp_path / "one")
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "two"))
    assert_same_sasrec(a, b, config.lr, steps=-(-len(load_prepared(data_dir).users) // 128))
