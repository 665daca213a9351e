"""prepare_dataset on the real shared data and on hand-built cases: counts, order, filters, atomicity."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from training.common.errors import ConfigError, DataError
from training.data import writer
from training.data.dataset import load_prepared
from training.data.prepare import PrepareConfig, filter_core, prepare_dataset
from training.data.writer import UserSequence

from .conftest import write_gz, write_ml100k


def files_of(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def ml100k(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml100k") / "ml-100k"
    return prepare_dataset(PrepareConfig(dataset="ml-100k"), shared_data_dir / "ml-100k", out)


def test_ml100k_counts_and_ids(ml100k: Path) -> None:
    stats = json.loads((ml100k / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert stats["min_length"] == 20 and stats["users_without_timestamps"] == 0
    data = load_prepared(ml100k)
    assert data.users == [str(u) for u in range(1, 944)]  # numeric id order
    assert [it.original_id for it in data.items] == [str(i) for i in range(1, 1683)]
    assert data.items[0].title == "Toy Story" and data.items[0].year == 1995
    assert len(data.genres) == 19 and data.items[0].genres == ("Animation", "Children's", "Comedy")
    meta = json.loads((ml100k / "dataset.json").read_text())
    assert meta["config"]["dataset"] == "ml-100k" and "u.data" in meta["source"]["files"]


def test_ml100k_sequences_are_u_data_sorted_stably_by_time(ml100k: Path, shared_data_dir: Path) -> None:
    rows: dict[str, list[tuple[int, int]]] = {}
    for line in (shared_data_dir / "ml-100k" / "u.data").read_text().splitlines():
        user, item, _, ts = line.split("\t")
        rows.setdefault(user, []).append((int(item), int(ts)))
    data = load_prepared(ml100k)
    ties = 0
    for u, user in enumerate(data.users):
        expected = sorted(rows[user], key=lambda r: r[1])  # stable: equal timestamps keep file order
        ties += len(expected) - len({t for _, t in expected})
        assert list(zip(data.sequences[u].tolist(), data.timestamps[u].tolist(), strict=True)) == expected
    assert ties > 1000  # the tie rule is really exercised


def test_ml100k_leave_one_out(ml100k: Path) -> None:
    data = load_prepared(ml100k)
    for u in (0, 500, 942):
        s = data.sequences[u].tolist()
        assert data.split_input(u, "train").tolist() == s[:-2]
        assert (data.split_input(u, "valid").tolist(), data.split_target(u, "valid")) == (s[:-2], s[-2])
        assert (data.split_input(u, "test").tolist(), data.split_target(u, "test")) == (s[:-1], s[-1])


def test_prepare_is_deterministic(ml100k: Path, shared_data_dir: Path, tmp_path: Path) -> None:
    again = prepare_dataset(PrepareConfig(dataset="ml-100k"), shared_data_dir / "ml-100k", tmp_path / "again")
    assert files_of(again) == files_of(ml100k)


def test_failed_prepare_leaves_nothing(toy_ml100k: Path, tmp_path: Path) -> None:
    (toy_ml100k / "u.data").write_text("1\t1\t3\t5\n1\t2\t3\t6\nbroken line\n")
    out = tmp_path / "out" / "toy"
    with pytest.raises(DataError, match=r"u\.data:3: expected 4"):
        prepare_dataset(PrepareConfig(dataset="ml-100k"), toy_ml100k, out)
    assert not out.exists() and (not out.parent.exists() or leftovers(out.parent) == [])


def test_failed_write_keeps_previous_output(toy_ml100k: Path, tmp_path: Path, monkeypatch) -> None:
    out = prepare_dataset(PrepareConfig(dataset="ml-100k"), toy_ml100k, tmp_path / "toy")
    before = files_of(out)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "compute_stats", explode)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(PrepareConfig(dataset="ml-100k", dedupe=False), toy_ml100k, out)
    assert files_of(out) == before and leftovers(tmp_path) == []
    monkeypatch.undo()
    prepare_dataset(PrepareConfig(dataset="ml-100k", min_seq_len=4), toy_ml100k, out)  # replaced on success
    assert json.loads((out / "stats.json").read_text())["users"] == 1 and leftovers(tmp_path) == []


def test_refuses_to_replace_a_foreign_directory(toy_ml100k: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a processed dataset"):
        prepare_dataset(PrepareConfig(dataset="ml-100k"), toy_ml100k, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_kcore_cascades_on_a_hand_built_case(tmp_path: Path) -> None:
    # d, e, f, g have < 3 users -> removed; then u3 (a b) and u4 (a c) are too short -> removed;
    # a, b, c keep exactly 3 users (u1, u2, u6), so the 3-core is those 3 users x 3 items.
    seqs = {"1": "abcd", "2": "abc", "3": "abd", "4": "ace", "5": "efg", "6": "abc"}
    code = {c: k for k, c in enumerate("abcdefg", 1)}
    ratings = [(int(u), code[c], t) for u, s in seqs.items() for t, c in enumerate(s)]
    root = write_ml100k(tmp_path / "raw", ratings)
    out = prepare_dataset(PrepareConfig(dataset="ml-100k", kcore=3), root, tmp_path / "out")
    data = load_prepared(out)
    assert data.users == ["1", "2", "6"]
    assert [it.original_id for it in data.items] == ["1", "2", "3"]
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3]] * 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["removed_interactions"] == {"untitled": 0, "duplicates": 0, "kcore_and_length": 10}
    with pytest.raises(DataError, match="no user has >= 4 interactions"):
        prepare_dataset(PrepareConfig(dataset="ml-100k", kcore=4), root, tmp_path / "out4")
    assert not (tmp_path / "out4").exists()


def reference_core(pairs: set[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    """The definition: remove any user or item with < k interactions, one at a time, until none is left."""
    while True:
        users = Counter(u for u, _ in pairs)
        items = Counter(i for _, i in pairs)
        bad = next(((u, None) for u, n in users.items() if n < k), None) or next(
            ((None, i) for i, n in items.items() if n < k), None
        )
        if bad is None:
            return pairs
        pairs = {p for p in pairs if p[0] != bad[0] and p[1] != bad[1]}


@pytest.mark.parametrize("seed", range(5))
def test_filter_core_matches_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    pairs = {(rng.randrange(40), rng.randrange(30)) for _ in range(400)}
    seqs = {str(u): UserSequence([str(i) for uu, i in sorted(pairs) if uu == u], None) for u, _ in pairs}
    got = filter_core(seqs, 4, 4)
    assert {(int(u), int(i)) for u, s in got.items() for i in s.items} == reference_core(pairs, 4)


def test_dedupe_and_untitled_items(tmp_path: Path) -> None:
    ratings = [(1, 1, 10), (1, 2, 20), (1, 1, 30), (1, 3, 40), (1, 4, 50), (2, 1, 1), (2, 2, 2), (2, 3, 3)]
    root = write_ml100k(tmp_path / "raw", ratings, titles={3: ""})
    data = load_prepared(prepare_dataset(PrepareConfig(dataset="ml-100k"), root, tmp_path / "a"))
    assert [it.original_id for it in data.items] == ["1", "2", "4"]  # item 3 has no title: dropped
    assert data.sequences[0].tolist() == [1, 2, 3] and data.timestamps[0].tolist() == [10, 20, 50]
    assert data.users == ["1"]  # user 2 is left with 2 interactions
    kept = PrepareConfig(dataset="ml-100k", dedupe=False, drop_untitled=False)
    data = load_prepared(prepare_dataset(kept, root, tmp_path / "b"))
    assert data.sequences[0].tolist() == [1, 2, 1, 3, 4] and data.items[2].title == ""


def test_config_and_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset 'movielens' is unknown"):
        PrepareConfig(dataset="movielens")
    with pytest.raises(ConfigError, match="min_seq_len must be >= 3"):
        PrepareConfig(dataset="ml-100k", min_seq_len=2)
    with pytest.raises(ConfigError, match="category is only for"):
        PrepareConfig(dataset="ml-1m", category="Beauty")
    assert PrepareConfig(dataset="amazon2014-beauty").dataset == "amazon2014-beauty"
    with pytest.raises(DataError, match="source directory not found"):
        prepare_dataset(PrepareConfig(dataset="ml-100k"), tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/u\.data: file not found"):
        prepare_dataset(PrepareConfig(dataset="ml-100k"), tmp_path / "empty", tmp_path / "out")


def file_order(path: Path) -> dict[str, list[str]]:
    """Each user's items in the order of the shared file (both files are already chronological)."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    rows: dict[str, list[str]] = {}
    for line in lines[1:] if "\t" in lines[0] else lines:  # the TSV has a header
        user, item = line.split()[:2]
        rows.setdefault(user, []).append(item)
    return rows


@pytest.mark.parametrize(
    ("name", "file", "expected"),
    [
        ("ml-1m", "ml-1m.txt.gz", (6040, 3706, 1000209)),
        ("amazon-beauty", "interactions.tsv.gz", (22332, 12086, 198215)),
    ],
)
def test_shared_ml1m_and_amazon_beauty(
    shared_data_dir: Path, tmp_path: Path, name: str, file: str, expected
) -> None:
    out = prepare_dataset(PrepareConfig(dataset=name), shared_data_dir / name, tmp_path / name)
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == expected
    data = load_prepared(out)
    original = [it.original_id for it in data.items]
    rows = file_order(shared_data_dir / name / file)
    for u, user in enumerate(data.users):  # the shared order is kept (stable sort, ties in file order)
        assert [original[i - 1] for i in data.sequences[u].tolist()] == rows[user]
        ts = data.timestamps[u]
        assert ts is None or bool((ts[1:] >= ts[:-1]).all())


def test_amazon2014_end_to_end(tmp_path: Path) -> None:
    """Category found from the files, repeated reviews deduplicated, untitled items dropped, asin order."""
    reviews = [
        ("U1", "B3", 30), ("U1", "B1", 10), ("U1", "B2", 20), ("U1", "B1", 40),  # B1 reviewed twice
        ("U2", "B2", 5), ("U2", "B3", 6), ("U2", "B4", 7), ("U2", "B1", 8),  # B4 has no title
    ]  # fmt: skip
    lines = [json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t}) for u, a, t in reviews]
    raw = tmp_path / "raw"
    write_gz(raw / "reviews_Beauty_5.json.gz", "\n".join(lines) + "\n")
    meta = [
        {"asin": f"B{k}", "title": f"Thing {k}", "categories": [["Beauty", f"Cat{k % 2}"]]} for k in (1, 2, 3)
    ]
    write_gz(raw / "meta_Beauty.json.gz", "".join(repr(m) + "\n" for m in [*meta, {"asin": "B4"}]))
    out = prepare_dataset(PrepareConfig(dataset="amazon2014-beauty"), raw, tmp_path / "out")
    data = load_prepared(out)
    assert (data.name, data.verb, data.noun, data.genres) == (
        "amazon2014-beauty",
        "purchased",
        "item",
        ["Cat0", "Cat1"],
    )
    assert [it.original_id for it in data.items] == ["B1", "B2", "B3"] and data.items[0].genres == ("Cat1",)
    assert data.users == ["U1", "U2"]
    assert data.sequences[0].tolist() == [1, 2, 3] and data.timestamps[0].tolist() == [10, 20, 30]
    assert data.sequences[1].tolist() == [2, 3, 1]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["removed_interactions"] == {"untitled": 1, "duplicates": 1, "kcore_and_length": 0}
