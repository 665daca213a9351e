"""LLM-SRec training, checkpoints and scoring on a toy catalog with a tiny random Llama and a real SASRec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.llmsrec import LLMSRecEncoder, LossWeights
from models.sasrec import SASRec, SASRecConfig
from tests.models.tiny_llm import one_torch_thread, tiny_llm
from training.common.errors import CheckpointError, ConfigError
from training.data.dataset import Item, PreparedData
from training.llmsrec import checkpoint as llmsrec_checkpoint
from training.llmsrec import train as llmsrec_train
from training.llmsrec.checkpoint import load_llmsrec
from training.llmsrec.config import LLMSRecTrainConfig
from training.llmsrec.examples import sample_negatives, training_examples
from training.llmsrec.item_table import compute_item_table
from training.llmsrec.scorer import LLMSRecScorer, build_encoder, load_llmsrec_scorer
from training.llmsrec.step import train_step
from training.llmsrec.train import new_heads, train_llmsrec

N_ITEMS = 130  # enough for 1 + 99 candidates outside every history


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def toy_data(root) -> PreparedData:
    """10 users with 5-8 distinct items of 130, every other one with timestamps."""
    rng = np.random.default_rng(0)
    items = [
        Item(i, str(100 + i), f"Movie number {i} ({1950 + i % 50})", None, ()) for i in range(1, N_ITEMS + 1)
    ]
    sequences = [
        rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(5, 9)), replace=False) for _ in range(10)
    ]
    timestamps = [
        8.8e8 + 86400.0 * np.arange(len(s)) if u % 2 == 0 else None for u, s in enumerate(sequences)
    ]
    return PreparedData(
        root=root,
        name="toy",
        verb="watched",
        noun="movie",
        genres=[],
        items=items,
        users=[f"u{u}" for u in range(10)],
        sequences=[s.astype(np.int64) for s in sequences],
        timestamps=timestamps,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    return toy_data(tmp_path_factory.mktemp("toy"))


def toy_teacher() -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items=N_ITEMS, hidden=16, max_len=20)).eval()


@pytest.fixture(scope="module")
def teacher() -> SASRec:
    return toy_teacher()


def patch_loaders(monkeypatch, teacher) -> None:
    """Real training code, with the tiny LLM and the in-memory teacher in place of the loaders."""
    monkeypatch.setattr(llmsrec_train, "load_sasrec", lambda *a, **k: teacher)
    monkeypatch.setattr(llmsrec_train, "load_llm", lambda *a, **k: tiny_llm(seed=0))
    monkeypatch.setattr(llmsrec_checkpoint, "load_llm", lambda *a, **k: tiny_llm(seed=0))


@pytest.fixture()
def patched(monkeypatch, teacher):
    patch_loaders(monkeypatch, teacher)


def fast_config(**kw) -> LLMSRecTrainConfig:
    base = {"epochs": 1, "batch_size": 4, "device": "cpu", "progress": False, "item_batch_size": 64}
    return LLMSRecTrainConfig(**(base | {"recipe": "paper"} | kw))  # the cached recipe: test_llmsrec_cached


def test_examples_follow_the_train_split(data) -> None:
    examples = training_examples(data, max_users=0, seed=0)
    assert len(examples) == data.n_users
    for ex, seq, ts in zip(examples, data.sequences, data.timestamps, strict=True):
        assert ex.history.tolist() == seq[:-3].tolist() and ex.target == seq[-3]
        assert ex.seen == frozenset(seq[:-2].tolist())  # never the valid/test items: no peeking
        assert (ex.timestamps is None) == (ts is None)
    assert len(training_examples(data, max_users=4, seed=1)) == 4


def test_negatives_never_the_positive_or_history(data) -> None:
    rng = np.random.default_rng(0)
    for ex in training_examples(data, 0, 0):
        for _ in range(50):
            negs = sample_negatives(rng, N_ITEMS, ex.seen, 3)
            assert len(set(negs)) == 3 and not set(negs) & ex.seen and ex.target not in negs
    with pytest.raises(ConfigError, match="available as negatives"):
        sample_negatives(rng, 5, frozenset({1, 2, 3}), 3)


def make_encoder(data, teacher) -> LLMSRecEncoder:
    llm = tiny_llm(seed=0)
    heads = new_heads(data, teacher, llm, seed=0)
    return build_encoder(llm, heads, data, llmsrec_train.PromptConfig("watched", "movie", 10, 24))


@pytest.mark.parametrize("variant", ["llmsrec", "llm-only"])
def test_step_trains_heads_and_leaves_llm_bit_identical(data, teacher, variant) -> None:
    enc = make_encoder(data, teacher)
    llm_before = {k: v.clone() for k, v in enc.llm.state_dict().items()}
    heads_before = {k: v.clone() for k, v in enc.heads.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.Adam([p for p in enc.heads.parameters() if p.requires_grad], lr=1e-3)
    batch = training_examples(data, 0, 0)[:4]
    negs = [sample_negatives(np.random.default_rng(0), N_ITEMS, e.seen, 3) for e in batch]
    weights = LossWeights() if variant == "llmsrec" else LossWeights(1.0, 0.0, 0.0)
    parts = train_step(enc, teacher if variant == "llmsrec" else None, batch, negs, weights, opt)
    assert all(np.isfinite(v) for v in parts.values())
    assert all(torch.equal(v, llm_before[k]) for k, v in enc.llm.state_dict().items())
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    changed = {k for k, v in enc.heads.state_dict().items() if not torch.equal(v, heads_before[k])}
    trained = {"item_emb_proj.0.weight", "pred_user.0.weight", "pred_item.3.weight", "user_out", "item_out"}
    assert trained <= changed
    assert "cf_item_emb" not in changed
    assert ("pred_user_CF2.0.weight" in changed) == (variant == "llmsrec")


def test_checkpoint_round_trip_and_serving_encoder_agrees(data, patched, tmp_path) -> None:
    out = tmp_path / "ckpt"
    result = train_llmsrec(data, tmp_path / "sasrec", fast_config(epochs=2), out)
    assert result["best_epoch"] in (1, 2) and 0.0 <= result["valid"]["hr@10"] <= 1.0
    for name in (
        "config.json",
        "heads.safetensors",
        "item_vectors.npy",
        "item_ids.npy",
        "history.json",
        "training_curve.png",
        "train_state.pt",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == "llmsrec" and config["dataset"] == "toy"
    assert set(config["llm"]) >= {
        "id",
        "path",
        "dtype",
        "special_tokens",
        "prompt_template_version",
        "max_title_tokens",
        "history_len",
        "hidden_size",
    }
    assert "model.layers.0.self_attn.q_proj.weight" not in load_file(out / "heads.safetensors")  # no LLM
    ckpt = load_llmsrec(out)
    assert ckpt.item_table.shape == (N_ITEMS + 1, 128) and not ckpt.item_table[0].any()
    assert np.load(out / "item_ids.npy").tolist() == list(range(N_ITEMS + 1))
    # The service builds its encoder from the checkpoint with models/ only: same embeddings, same vectors.
    llm = tiny_llm(seed=0)
    titles = [item.title for item in data.items]
    serving = LLMSRecEncoder(
        llm.model, llm.tokenizer, ckpt.heads, titles, config["llm"]["special_tokens"], ckpt.prompt
    )
    training = build_encoder(llm, ckpt.heads, data, ckpt.prompt)
    histories, stamps = [data.sequences[0][:-1], data.sequences[1][:-1]], [data.timestamps[0][:-1], None]
    assert torch.equal(
        serving.user_batch(histories, stamps).inputs_embeds,
        training.user_batch(histories, stamps).inputs_embeds,
    )
    with torch.no_grad():
        items = serving.item_vectors(list(range(1, N_ITEMS + 1))).numpy()
    np.testing.assert_allclose(items, ckpt.item_table[1:], atol=1e-5)


def test_item_table_is_independent_of_batching(data, teacher) -> None:
    enc = make_encoder(data, teacher)
    a = compute_item_table(enc, N_ITEMS, batch_size=7, progress=False)
    b = compute_item_table(enc, N_ITEMS, batch_size=128, progress=False)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_resume_continues_and_refuses_another_run(data, patched, tmp_path) -> None:
    out = tmp_path / "ckpt"
    train_llmsrec(data, tmp_path, fast_config(epochs=1), out)
    result = train_llmsrec(data, tmp_path, fast_config(epochs=2, resume=True), out)
    assert result["epochs_run"] == 2
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    with pytest.raises(CheckpointError, match="another run"):
        train_llmsrec(data, tmp_path, fast_config(epochs=3, resume=True, seed=7), out)


def test_llm_only_variant_recorded_and_checked(data, patched, tmp_path) -> None:
    out = tmp_path / "ckpt"
    train_llmsrec(data, tmp_path, fast_config(variant="llm-only"), out)
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == "llm-only"
    assert config["train"]["resolved_weights"] == {"retrieval": 1.0, "distill": 0.0, "uniformity": 0.0}
    with pytest.raises(CheckpointError, match="variant 'llm-only', not 'llmsrec'"):
        load_llmsrec_scorer(out, data, expect_variant="llmsrec")
    scorer = load_llmsrec_scorer(out, data, expect_variant="llm-only", batch_size=2)
    histories = [data.sequences[u][:-1] for u in range(5)]
    stamps = [data.timestamps[u][:-1] if data.timestamps[u] is not None else None for u in range(5)]
    cands = np.arange(1, 11).reshape(5, 2)
    users = scorer.user_vectors(histories, stamps)
    one_by_one = np.concatenate(
        [scorer.user_vectors([h], [t]) for h, t in zip(histories, stamps, strict=True)]
    )
    np.testing.assert_allclose(users, one_by_one, atol=1e-5)
    np.testing.assert_allclose(
        scorer.score(histories, cands, stamps),
        np.einsum("bd,bcd->bc", users, scorer.item_table[cands]),
        rtol=1e-6,
    )


def test_broken_checkpoints_are_refused_with_the_file_named(data, patched, tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_llmsrec(tmp_path / "nothing")
    out = tmp_path / "ckpt"
    train_llmsrec(data, tmp_path, fast_config(), out)
    np.save(out / "item_vectors.npy", np.zeros((3, 128), dtype=np.float32))
    with pytest.raises(CheckpointError, match=r"item_vectors.npy: shape \(3, 128\)"):
        load_llmsrec(out)
    (out / "heads.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"heads\.safetensors"):
        load_llmsrec(out)


def test_scorer_runs_the_llm_once_per_distinct_prompt(data, teacher) -> None:
    enc = make_encoder(data, teacher)
    scorer = LLMSRecScorer(enc, np.zeros((N_ITEMS + 1, 128), dtype=np.float32), batch_size=2)
    calls: list[int] = []
    original = enc.user_vectors
    enc.user_vectors = lambda h, t: calls.append(len(h)) or original(h, t)  # type: ignore[method-assign]
    histories = [data.sequences[0][:-1], data.sequences[1][:-1], data.sequences[0][:-1]]
    first = scorer.user_vectors(histories)
    assert sum(calls) == 2  # the repeated history is computed once
    again = scorer.user_vectors(histories[:2])
    assert sum(calls) == 2  # and remembered (evaluate(shuffle=True) asks for the originals again)
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(again, first[:2])
    other = data.sequences[0][:-1].copy()
    other[-1] = N_ITEMS  # a different item changes the [HistoryEmb] row even if the text were equal
    scorer.user_vectors([other])
    assert sum(calls) == 3
