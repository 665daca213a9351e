"""SASRec training, checkpoints and scoring: toy data for the mechanics, real ml-100k for learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.sasrec import SASRec, SASRecConfig
from training.common.errors import CheckpointError, ConfigError
from training.data.dataset import Item, PreparedData, load_prepared
from training.evaluation.popularity import PopularityScorer
from training.evaluation.protocol import evaluate
from training.sasrec import train as sasrec_train
from training.sasrec.checkpoint import load_sasrec, save_checkpoint
from training.sasrec.config import SASRecTrainConfig
from training.sasrec.scorer import SASRecScorer, pad_histories
from training.sasrec.train import TrainingSequences, train_sasrec

N_ITEMS = 150  # enough for 1 + 99 candidates outside every history


def toy_data(root, n_users: int = 40, seed: int = 0) -> PreparedData:
    """Users walk the catalogue in steps of +1 from a random start: an order SASRec can learn."""
    rng = np.random.default_rng(seed)
    starts, lengths = rng.integers(1, N_ITEMS + 1, n_users), rng.integers(4, 26, n_users)
    sequences = [
        ((s - 1 + np.arange(n)) % N_ITEMS + 1).astype(np.int64) for s, n in zip(starts, lengths, strict=True)
    ]
    return PreparedData(
        root=root,
        name="toy",
        verb="watched",
        noun="movie",
        genres=[],
        items=[Item(i, str(i), f"Movie {i}", None, ()) for i in range(1, N_ITEMS + 1)],
        users=[f"u{u}" for u in range(n_users)],
        sequences=sequences,
        timestamps=[None] * n_users,
    )


def tiny_config(**kw) -> SASRecTrainConfig:
    base = {
        "hidden": 16,
        "max_len": 10,
        "batch_size": 8,
        "epochs": 2,
        "eval_every": 1,
        "device": "cpu",
        "num_threads": 1,
    }
    return SASRecTrainConfig(**(base | {"progress": False} | kw))


def tiny_model(seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(SASRecConfig(N_ITEMS, hidden=16, max_len=10)).eval()


def test_training_pairs_are_the_train_split_shifted_by_one(tmp_path) -> None:
    data = toy_data(tmp_path)
    seqs = TrainingSequences.build(data, max_len=10)
    for u in (0, 1, 2):
        train = data.sequences[u][:-2]
        inputs, targets = seqs.inputs[u], seqs.targets[u]
        assert inputs[inputs != 0].tolist() == train[:-1][-10:].tolist()
        assert targets[targets != 0].tolist() == train[1:][-10:].tolist()
        assert ((inputs != 0) == (targets != 0)).all()  # right-aligned together


def test_negatives_are_never_an_item_of_the_users_train_sequence(tmp_path) -> None:
    data = toy_data(tmp_path)
    seqs = TrainingSequences.build(data, max_len=30)
    rng, rows = np.random.default_rng(0), np.arange(len(seqs))
    for _ in range(50):
        neg = seqs.sample_negatives(rng, rows)
        assert ((neg != 0) == (seqs.targets != 0)).all()
        for u in rows:
            assert not set(neg[u][neg[u] != 0].tolist()) & set(data.sequences[u][:-2].tolist())
            assert neg[u].max() <= N_ITEMS


def test_pad_histories_keeps_the_most_recent_items_right_aligned() -> None:
    got = pad_histories([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)], max_len=3)
    assert got.tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]


def test_scorer_truncates_long_histories_and_matches_the_model() -> None:
    model = tiny_model()
    long, short = np.arange(1, 31), np.array([4, 5, 6])
    candidates = np.array([[1, 2, 3, 50], [7, 8, 9, 10]])
    scorer = SASRecScorer(model, batch_size=1)
    scores = scorer.score([long, short], candidates)
    torch.testing.assert_close(scores, scorer.score([long[-10:], short], candidates), rtol=0, atol=0)
    with torch.no_grad():
        direct = model.score(
            torch.tensor([long[-10:].tolist(), [0] * 7 + [4, 5, 6]]), torch.tensor(candidates)
        )
    np.testing.assert_allclose(scores, direct.numpy(), rtol=1e-5, atol=1e-6)
    vectors = scorer.user_vectors([long, short])
    full = np.tile(np.arange(1, N_ITEMS + 1), (2, 1))  # one shared list takes the matmul path
    np.testing.assert_allclose(
        scorer.score([long, short], full),
        vectors @ model.item_emb.weight[1:].detach().numpy().T,
        rtol=1e-5,
        atol=1e-5,
    )
    # one forward for both: exactly score's scores and user_vectors' vectors (per-row or shared lists)
    for shared in (candidates, full):
        both, users = scorer.score_with_users([long, short], shared)
        np.testing.assert_array_equal(both, scorer.score([long, short], shared))
        np.testing.assert_array_equal(users, vectors)


def test_checkpoint_round_trip_gives_identical_scores(tmp_path) -> None:
    model = tiny_model(seed=5)
    meta = {
        "dataset": "toy",
        "model": {
            "n_items": N_ITEMS,
            "hidden": 16,
            "n_blocks": 2,
            "n_heads": 1,
            "max_len": 10,
            "dropout": 0.1,
        },
        "train": {},
        "best_epoch": 1,
        "valid": {},
    }
    save_checkpoint(
        tmp_path / "ckpt", model, meta, [{"epoch": 1, "loss": 1.0, "seconds": 0.1, "valid": {"ndcg@10": 0.2}}]
    )
    loaded = load_sasrec(tmp_path / "ckpt")
    assert not loaded.training
    histories, candidates = [np.array([3, 4, 5]), np.arange(1, 20)], np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(
        SASRecScorer(loaded).score(histories, candidates), SASRecScorer(model).score(histories, candidates)
    )
    table = np.load(tmp_path / "ckpt" / "item_embeddings.npy")
    assert table.dtype == np.float32 and np.array_equal(table, model.item_emb.weight.detach().numpy())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "history.json",
        "item_embeddings.npy",
        "model.safetensors",
        "training_curve.png",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_broken_checkpoints_are_refused_naming_the_file(tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    meta = {"dataset": "toy", "model": {"n_items": N_ITEMS, "hidden": 16, "max_len": 10}, "best_epoch": 1}
    save_checkpoint(ckpt, tiny_model(), meta, [{"epoch": 1, "loss": 1.0, "seconds": 0.1, "valid": None}])
    weights = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_sasrec(ckpt)
    (ckpt / "model.safetensors").write_bytes(weights)
    (ckpt / "config.json").write_text(json.dumps(meta | {"model": meta["model"] | {"hidden": 32}}))
    with pytest.raises(CheckpointError, match=r"does not match config\.json"):
        load_sasrec(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_sasrec(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_sasrec(ckpt)


def test_an_unrelated_directory_is_never_overwritten(tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a SASRec checkpoint"):
        save_checkpoint(tmp_path / "out", tiny_model(), {"best_epoch": 1}, [])


def test_same_seed_gives_identical_training_and_another_seed_does_not(tmp_path) -> None:
    data = toy_data(tmp_path)
    runs = [train_sasrec(data, tiny_config(seed=s), tmp_path / f"run{i}") for i, s in enumerate((1, 1, 2))]
    weights = [load_file(tmp_path / f"run{i}" / "model.safetensors") for i in range(3)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["item_emb.weight"], weights[2]["item_emb.weight"])
    assert runs[0]["valid"] == runs[1]["valid"]
    history = [json.loads((tmp_path / f"run{i}" / "history.json").read_text()) for i in range(2)]
    assert [(h["loss"], h["valid"]) for h in history[0]] == [(h["loss"], h["valid"]) for h in history[1]]


def test_the_best_validation_epoch_is_kept_and_patience_stops_training(tmp_path, monkeypatch) -> None:
    data = toy_data(tmp_path)
    scripted, snapshots = iter([0.1, 0.5, 0.3, 0.2, 0.9]), []

    def fake_validate(model, data, config):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"ndcg@10": next(scripted)}

    monkeypatch.setattr(sasrec_train, "validate", fake_validate)
    result = train_sasrec(data, tiny_config(epochs=10, patience=2), tmp_path / "ckpt")
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert [h["valid"]["ndcg@10"] for h in history] == [0.1, 0.5, 0.3, 0.2]  # stopped 2 epochs after the best
    assert result["best_epoch"] == 2 and result["epochs_run"] == 4
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["best_epoch"] == 2 and config["valid"] == {"ndcg@10": 0.5}
    saved = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert all(torch.equal(saved[k], snapshots[1][k]) for k in saved)
    assert not torch.equal(saved["item_emb.weight"], snapshots[3]["item_emb.weight"])


@pytest.mark.parametrize(
    ("kw", "flag"), [({"n_heads": 3}, "--hidden"), ({"eval_every": 0}, "--eval-every"), ({"lr": 0.0}, "--lr")]
)
def test_bad_flags_are_refused(tmp_path, kw, flag) -> None:
    with pytest.raises(ConfigError, match=flag):
        train_sasrec(toy_data(tmp_path), tiny_config(**kw), tmp_path / "ckpt")


@pytest.mark.slow
def test_a_short_run_on_ml100k_beats_popularity(shared_data_dir, tmp_path) -> None:
    from training.data.prepare import PrepareConfig, prepare_dataset

    data = load_prepared(
        prepare_dataset(PrepareConfig(dataset="ml-100k"), shared_data_dir / "ml-100k", tmp_path / "d")
    )
    config = SASRecTrainConfig(
        hidden=32,
        max_len=50,
        dropout=0.2,
        epochs=20,
        eval_every=5,
        progress=False,
        device="cpu",
        num_threads=1,
    )
    result = train_sasrec(data, config, tmp_path / "ckpt")
    model = load_sasrec(tmp_path / "ckpt")
    sasrec = evaluate(data, SASRecScorer(model), "1+99", split="test", progress=False)
    popularity = evaluate(data, PopularityScorer(data), "1+99", split="test", progress=False)
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert history[-1]["loss"] < history[0]["loss"] and result["valid"]["ndcg@10"] > 0.25
    assert sasrec["ndcg@10"] > popularity["ndcg@10"] + 0.02, (sasrec, popularity)
