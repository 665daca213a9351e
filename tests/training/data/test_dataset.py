"""load_prepared and the leave-one-out split, on a dataset prepared from a hand-written raw slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.common.errors import DataError
from training.data.dataset import Item, load_prepared, seeded_subset
from training.data.prepare import PrepareConfig, prepare_dataset


@pytest.fixture()
def prepared(toy_ml100k: Path, tmp_path: Path) -> Path:
    return prepare_dataset(PrepareConfig(dataset="ml-100k"), toy_ml100k, tmp_path / "out")


def test_load_reads_items_users_and_chronological_sequences(prepared: Path) -> None:
    data = load_prepared(prepared)
    assert (data.name, data.verb, data.noun, data.root) == ("ml-100k", "watched", "movie", prepared)
    assert data.genres[:3] == ["unknown", "Action", "Adventure"]
    assert data.n_items == 5 and [it.item_id for it in data.items] == [1, 2, 3, 4, 5]
    assert data.items[3] == Item(4, "4", "The Usual Suspects", 1995, ("Drama",))
    assert data.users == ["1", "2", "3"]  # user 4 has one interaction: dropped
    assert [s.tolist() for s in data.sequences] == [[2, 1, 3, 4], [1, 5, 3], [4, 1, 2]]
    assert data.sequences[0].dtype == np.int64
    assert data.timestamps[0] is not None and data.timestamps[0].tolist() == [50, 100, 100, 400]


def test_leave_one_out_split(prepared: Path) -> None:
    data = load_prepared(prepared)
    s, ts = data.sequences[0], data.timestamps[0]
    assert data.split_input(0, "train").tolist() == s[:-2].tolist() == [2, 1]
    assert data.split_input(0, "valid").tolist() == [2, 1] and data.split_target(0, "valid") == 3
    assert data.split_input(0, "test").tolist() == [2, 1, 3] and data.split_target(0, "test") == 4
    assert data.split_timestamps(0, "test").tolist() == ts[:-1].tolist()
    assert data.split_timestamps(0, "valid").tolist() == [50, 100]
    assert data.split_input(2, "train").tolist() == [4]  # shortest case: one training item
    with pytest.raises(ValueError, match="no target"):
        data.split_target(0, "train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown split"):
        data.split_input(0, "dev")  # type: ignore[arg-type]


def test_user_without_timestamps_has_none(prepared: Path) -> None:
    lines = (prepared / "sequences.jsonl").read_text().splitlines()
    first = json.loads(lines[0]) | {"timestamps": None}
    (prepared / "sequences.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    data = load_prepared(prepared)
    assert data.timestamps[0] is None and data.split_timestamps(0, "test") is None
    assert data.timestamps[1] is not None


def seq(items: list[int], timestamps: list[int] | None = None) -> str:
    return json.dumps({"user": "1", "items": items, "timestamps": timestamps}) + "\n"


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("items.jsonl", None, r"items\.jsonl: file not found"),
        ("sequences.jsonl", seq([1, 2, 3]) + "{oops\n", r"sequences\.jsonl:2: malformed"),
        ("sequences.jsonl", seq([1, 2]), r"sequences\.jsonl:1: .*shorter than 3"),
        ("sequences.jsonl", seq([1, 2, 9]), r"sequences\.jsonl:1: item id outside 1\.\.5"),
        ("sequences.jsonl", seq([1, 2, 3], [1]), r"sequences\.jsonl:1: 1 timestamps for 3"),
        (
            "items.jsonl",
            '{"item_id": 2, "original_id": "2", "title": "x"}\n',
            r"items\.jsonl:1: item_id 2 out",
        ),
        ("items.jsonl", '{"item_id": 1}\n', r"items\.jsonl:1: bad item record"),
        ("dataset.json", '{"format_version": 7}', r"dataset\.json: format_version 7 is not 1"),
        ("dataset.json", "{", r"dataset\.json: malformed JSON"),
    ],
)
def test_load_errors_name_the_file(prepared: Path, file: str, content: str | None, message: str) -> None:
    if content is None:
        (prepared / file).unlink()
    else:
        (prepared / file).write_text(content)
    with pytest.raises(DataError, match=message):
        load_prepared(prepared)


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="processed dataset directory not found"):
        load_prepared(tmp_path / "nope")


def test_seeded_subset_is_a_sorted_reproducible_draw() -> None:
    ids = np.arange(10, 60)
    picked = seeded_subset(ids, 7, seed=3)
    assert len(picked) == 7 and len(set(picked.tolist())) == 7
    assert set(picked.tolist()) <= set(ids.tolist())
    assert (np.diff(picked) > 0).all()
    assert (seeded_subset(ids, 7, seed=3) == picked).all()
    assert not (seeded_subset(ids, 7, seed=4) == picked).all()
    assert seeded_subset(ids, 0, seed=3) is ids and seeded_subset(ids, 50, seed=3) is ids
