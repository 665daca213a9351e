"""What the 2-process tests run in each child, kept apart from the test module so that a child imports only
torch and the training code (transformers only where the LLM-SRec worker needs it)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.llmsrec import LLMSRecEncoder, uniformity_loss
from models.sasrec import SASRec
from tests.training.test_sasrec_train import toy_data
from training.common import distributed
from training.common.errors import LLMRecError
from training.data.dataset import PreparedData
from training.llmsrec.config import LLMSRecTrainConfig
from training.sasrec.config import SASRecTrainConfig
from training.sasrec.train import train_sasrec

WORLD = 2
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
N_USERS = 22  # SASRec batch 7: 7, 7, 7, 1, so the last batch leaves rank 1 with no rows
LLM_USERS = 11  # LLM-SRec batch 5: 5, 5, 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(rank: int, port: int, fn, args: tuple) -> None:
    os.environ |= {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(WORLD),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    torch.set_num_threads(1)
    fn(*args)


@contextmanager
def spawned(fn, *args) -> Iterator[None]:
    """Run fn(*args) in WORLD fresh processes with torchrun's env vars while the body runs (the one-process
    reference, so the two overlap); waits for them on exit, and a child's exception fails the test."""
    context = mp.spawn(_child, args=(free_port(), fn, args), nprocs=WORLD, join=False)
    try:
        yield
    finally:
        while not context.join():
            pass


def sasrec_config(**kw) -> SASRecTrainConfig:
    base = {"hidden": 16, "max_len": 10, "batch_size": 7, "epochs": 2, "eval_every": 1, "l2": 1e-3}
    # dropout 0: each rank draws its own dropout masks, so only dropout-free runs can match exactly
    fixed = {"dropout": 0.0, "device": "cpu", "num_threads": 1, "progress": False}
    return SASRecTrainConfig(**(base | fixed | kw))


def llmsrec_config(**kw) -> LLMSRecTrainConfig:
    base = {"epochs": 1, "batch_size": 5, "item_batch_size": 16, "device": "cpu", "progress": False}
    return LLMSRecTrainConfig(**(base | {"recipe": "paper"} | kw))  # DDP covers the end-to-end recipe


def train_sasrec_worker(root: Path, out: Path) -> None:
    """The collective helpers' checks (sharing this spawn's start-up cost), then SASRec training."""
    check_helpers()
    train_sasrec(toy_data(root, N_USERS), sasrec_config(), out)


def fresh_encoder(root: Path, sasrec_dir: Path) -> tuple[LLMSRecEncoder, SASRec, PreparedData]:
    """Freshly initialised LLM-SRec heads over the tiny Llama, the teacher and the data."""
    from models.prompts import PromptConfig
    from tests.models.tiny_llm import tiny_llm
    from training.llmsrec.scorer import build_encoder
    from training.llmsrec.train import new_heads
    from training.sasrec.checkpoint import load_sasrec

    data, llm, teacher = toy_data(root, LLM_USERS), tiny_llm(seed=0), load_sasrec(sasrec_dir)
    heads = new_heads(data, teacher, llm, seed=0)
    return build_encoder(llm, heads, data, PromptConfig(data.verb, data.noun, 10, 24)), teacher, data


def gradients(
    encoder: LLMSRecEncoder, teacher: SASRec, data: PreparedData, n: int
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Loss components and (all-reduced) gradients of one training step on a global batch of the first n
    users, this rank's shard of it; SGD with lr 0 keeps the weights, so steps can be compared one by one."""
    from models.llmsrec import LossWeights
    from training.llmsrec.examples import sample_negatives, training_examples
    from training.llmsrec.step import train_step

    examples = training_examples(data, 0, 0)[:n]
    rng = np.random.default_rng(0)
    negatives = [sample_negatives(rng, encoder.heads.config.n_items, e.seen, 3) for e in examples]
    part = distributed.shard(n)
    optimizer = torch.optim.SGD([p for p in encoder.heads.parameters() if p.requires_grad], lr=0.0)
    parts = train_step(encoder, teacher, examples[part], negatives[part], LossWeights(), optimizer, n)
    return parts, {
        f"{n}.{k}": p.grad.clone() for k, p in encoder.heads.named_parameters() if p.grad is not None
    }


def train_llmsrec_worker(root: Path, sasrec_dir: Path, out: Path) -> None:
    """Rank 0 saves into OUT's parent: the item table of fresh heads (table.npy), the gradients and loss
    components of a step on 5 users and on 1 (grads.safetensors, parts.json); then trains into OUT."""
    from safetensors.torch import save_file

    from tests.models.tiny_llm import tiny_llm
    from training.llmsrec import train as llmsrec_train
    from training.llmsrec.item_table import compute_item_table

    llmsrec_train.load_llm = lambda *a, **k: tiny_llm(seed=0)  # this child's module only
    with distributed.session("cpu"):
        encoder, teacher, data = fresh_encoder(root, sasrec_dir)
        table = compute_item_table(encoder, data.n_items, batch_size=16, progress=False)
        steps = [gradients(encoder, teacher, data, n) for n in (5, 1)]

        def save() -> None:
            np.save(out.parent / "table.npy", table)
            save_file(steps[0][1] | steps[1][1], out.parent / "grads.safetensors")
            (out.parent / "parts.json").write_text(json.dumps([parts for parts, _ in steps]))

        distributed.on_main(save)
        llmsrec_train.train_llmsrec(toy_data(root, LLM_USERS), sasrec_dir, llmsrec_config(), out)


def _fail_on_rank0() -> None:
    raise OSError("disk full")


def check_helpers() -> None:
    """The collective helpers, checked inside each rank."""
    with distributed.session("cpu") as info:
        assert info.world == WORLD and dist.get_backend() == "gloo"
        # a loss over all rows of a global batch, from gathered rows, gives the one-process gradient
        torch.manual_seed(0)
        full = torch.randn(5, 3)  # the same on every rank
        mine = full[distributed.shard(5)].clone().requires_grad_(True)
        uniformity_loss(distributed.gather_with_grad(mine, 5)).backward()
        ref = full.clone().requires_grad_(True)
        uniformity_loss(ref).backward()
        assert torch.allclose(mine.grad, ref.grad[distributed.shard(5)], atol=1e-6)
        # gradients summed; a parameter with no gradient on any rank keeps none
        used, unused, rank0_only = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
        used.grad = torch.full((2,), float(info.rank + 1))
        rank0_only.grad = torch.ones(2) if info.is_main else None
        total = distributed.all_reduce_grads([used, unused, rank0_only], torch.tensor([info.rank + 1.0]))
        assert used.grad.tolist() == [3.0, 3.0] and unused.grad is None and rank0_only.grad.tolist() == [1, 1]
        assert total is not None and total.tolist() == [3.0]
        assert distributed.any_rank(info.rank == 1) and not distributed.any_rank(False)
        rows = distributed.all_gather_rows(np.full((distributed.shard_sizes(3)[info.rank], 2), info.rank), 3)
        assert rows[:, 0].tolist() == [0, 0, 1]
        try:
            distributed.on_main(_fail_on_rank0)
        except OSError:
            assert info.is_main
        except LLMRecError as err:
            assert not info.is_main and "rank 0" in str(err)
        else:
            raise AssertionError("on_main swallowed rank 0's failure")
    assert not dist.is_initialized()  # the session tore down the group it created
