"""Shared candidates: seeded user subsets, negative sampling, and the stored file (reuse and rejection)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.evaluation.toy_data import make_data, random_data
from training.common.errors import ConfigError, DataError
from training.evaluation import candidates as cand
from training.evaluation.candidates import (
    candidates_path,
    load_candidates,
    sample_negatives,
    select_users,
)


def test_select_users_is_seeded_sorted_and_nested() -> None:
    a = select_users(1000, 100, seed=3)
    assert a.tolist() == sorted(a.tolist()) and len(set(a.tolist())) == 100
    assert np.array_equal(a, select_users(1000, 100, seed=3))
    assert not np.array_equal(a, select_users(1000, 100, seed=4))
    assert set(select_users(1000, 40, seed=3).tolist()) <= set(a.tolist())
    assert select_users(50, 100, seed=3).tolist() == list(range(50))
    with pytest.raises(ConfigError, match="max_users"):
        select_users(50, 0, seed=3)


def _assert_valid_negatives(negatives: np.ndarray, sequences: list[np.ndarray], n_items: int) -> None:
    assert negatives.min() >= 1 and negatives.max() <= n_items
    for row, seq in zip(negatives, sequences, strict=True):
        assert len(set(row.tolist())) == len(row), "duplicate negative"
        assert not np.isin(row, seq).any(), "negative from the user's own sequence"


def test_negatives_avoid_the_sequence_and_repeat_nothing() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.choice(np.arange(1, 501), size=int(n), replace=False) for n in rng.integers(3, 300, 400)]
    negatives = sample_negatives(seqs, 500, 99, np.random.default_rng(1))
    assert negatives.shape == (400, 99)
    _assert_valid_negatives(negatives, seqs, 500)
    assert np.array_equal(negatives, sample_negatives(seqs, 500, 99, np.random.default_rng(1)))


def test_small_catalogue_where_users_touched_nearly_everything() -> None:
    seqs = [np.arange(1, 101), np.arange(2, 100), np.array([5, 6, 7])]  # 100 of 120 items touched by user 0
    negatives = sample_negatives(seqs, 120, 19, np.random.default_rng(0))
    _assert_valid_negatives(negatives, seqs, 120)
    assert set(negatives[0].tolist()) <= set(range(101, 121))  # 19 of the only 20 untouched items


def test_too_few_untouched_items_is_a_data_error() -> None:
    seqs = [np.array([1, 2, 3]), np.arange(1, 90)]
    with pytest.raises(DataError, match=r"row 1 touched 89 of 100 items.*1\+19"):
        sample_negatives(seqs, 100, 19, np.random.default_rng(0))


def test_a_user_who_touched_almost_everything_is_named(tmp_path: Path) -> None:
    data = make_data(tmp_path, [[1, 2, 3], list(range(1, 90))], n_items=100)
    with pytest.raises(DataError, match=r"user 'u1' \(index 1\) touched 89 of 100 items"):
        load_candidates(data, "test", "1+19", 0, np.arange(2))
    assert not candidates_path(tmp_path, "test", "1+19", 0).exists()


@pytest.mark.parametrize("touched", [5, 22])  # rejection path, and the exact path for hard rows
def test_negatives_are_uniform_over_untouched_items(touched: int) -> None:
    n_items, k, rows = 30, 5, 6000
    seq = np.arange(1, touched + 1)
    negatives = sample_negatives([seq] * rows, n_items, k, np.random.default_rng(0))
    freq = np.bincount(negatives.ravel(), minlength=n_items + 1)[touched + 1 :] / rows
    expected = k / (n_items - touched)
    assert np.abs(freq - expected).max() < 0.05 * max(expected, 0.2) + 0.02


def test_candidates_stored_reused_and_shared(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=60, n_items=300)
    users = select_users(data.n_users, 60, seed=0)
    first = load_candidates(data, "test", "1+99", 0, users)
    path = candidates_path(tmp_path, "test", "1+99", 0)
    assert path == tmp_path / "candidates" / "test_1+99_seed0.npz" and path.is_file()
    stamp = path.stat().st_mtime_ns
    again = load_candidates(data, "test", "1+99", 0, users)
    assert np.array_equal(first, again) and path.stat().st_mtime_ns == stamp  # reloaded, not redrawn
    assert first.shape == (60, 100) and first.dtype == np.int64
    assert first[:, 0].tolist() == [data.split_target(int(u), "test") for u in users]
    _assert_valid_negatives(first[:, 1:], [data.sequences[u] for u in users], data.n_items)
    fresh_root = random_data(tmp_path / "other", n_users=60, n_items=300)  # same data, new directory
    assert np.array_equal(first, load_candidates(fresh_root, "test", "1+99", 0, users))
    subset = users[::7]
    assert np.array_equal(load_candidates(data, "test", "1+99", 0, subset), first[::7])
    assert not np.array_equal(first, load_candidates(data, "test", "1+99", 1, users))
    valid = load_candidates(data, "valid", "1+19", 0, users)
    assert valid.shape == (60, 20)
    assert valid[:, 0].tolist() == [data.split_target(int(u), "valid") for u in users]


def test_chunks_drawn_later_equal_a_single_draw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cand, "CHUNK_USERS", 8)
    data_a, data_b = random_data(tmp_path / "a", 30, 200), random_data(tmp_path / "b", 30, 200)
    few = select_users(30, 5, seed=0)
    load_candidates(data_a, "test", "1+19", 0, few)
    with np.load(candidates_path(data_a.root, "test", "1+19", 0)) as npz:
        assert npz["users"].size == 8  # one chunk of the seeded order
    everyone = np.arange(30)
    grown = load_candidates(data_a, "test", "1+19", 0, everyone)
    assert np.array_equal(grown, load_candidates(data_b, "test", "1+19", 0, everyone))


def _store(path: Path, users: np.ndarray, candidates: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, users=users, candidates=candidates)


def test_stored_file_with_wrong_shape_is_rejected(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=20, n_items=200)
    good = load_candidates(data, "test", "1+19", 0, np.arange(20))
    path = candidates_path(tmp_path, "test", "1+99", 0)
    with np.load(candidates_path(tmp_path, "test", "1+19", 0)) as npz:
        _store(path, npz["users"], npz["candidates"])  # a 1+19 file where 1+99 is asked
    with pytest.raises(DataError, match=r"test_1\+99_seed0\.npz.*shape \(20, 20\).*1\+99"):
        load_candidates(data, "test", "1+99", 0, np.arange(20))
    _store(path, np.arange(20), good)
    with pytest.raises(DataError, match="shape"):
        load_candidates(data, "test", "1+99", 0, np.arange(20))


def test_stored_file_for_other_users_or_data_is_rejected(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=20, n_items=200)
    users = np.arange(20)
    load_candidates(data, "test", "1+19", 0, users)
    path = candidates_path(tmp_path, "test", "1+19", 0)
    with np.load(path) as npz:
        stored_users, stored = npz["users"], npz["candidates"]
    _store(path, np.sort(stored_users), stored)
    with pytest.raises(DataError, match="seeded user order"):
        load_candidates(data, "test", "1+19", 0, users)
    _store(candidates_path(tmp_path, "valid", "1+19", 0), stored_users, stored)  # test file, valid name
    with pytest.raises(DataError, match="column 0 differs from the valid targets"):
        load_candidates(data, "valid", "1+19", 0, users)
    bad = stored.copy()
    bad[0, 1] = data.sequences[int(stored_users[0])][0]
    _store(path, stored_users, bad)
    with pytest.raises(DataError, match="touched"):
        load_candidates(data, "test", "1+19", 0, users)
    bad = stored.copy()
    bad[0, 2] = bad[0, 1]
    _store(path, stored_users, bad)
    with pytest.raises(DataError, match="duplicate"):
        load_candidates(data, "test", "1+19", 0, users)
    path.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="unreadable"):
        load_candidates(data, "test", "1+19", 0, users)


def test_unknown_protocol_has_no_candidates(tmp_path: Path) -> None:
    data = make_data(tmp_path, [[1, 2, 3]], n_items=50)
    with pytest.raises(ConfigError, match="full"):
        load_candidates(data, "test", "full", 0, np.arange(1))
