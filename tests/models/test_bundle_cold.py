"""The manifest's cold items on a small hand-written bundle: they round-trip, verify checks their rows in
every CF and item table without loading the weights, and refuses them without the allmrec part (the only
path that ranks them); the row reader matches safetensors for each stored dtype."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from safetensors.torch import save_file as save_torch

from models.bundle import ColdItems, Manifest, read_manifest, read_safetensors_rows
from models.bundle_verify import verify_bundle
from tests.models.test_bundle import N_ITEMS, edit_manifest, rehash, write_bundle

COLD = N_ITEMS  # the last item of the hand-written bundle


def make_cold(root: Path) -> None:
    """Mark the last item cold everywhere: catalog flag, zero rows, manifest cold_items."""
    lines = (root / "catalog.jsonl").read_text().splitlines()
    lines[-1] = json.dumps(json.loads(lines[-1]) | {"cold": True})
    (root / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    for rel, name in (
        ("sasrec/model.safetensors", "item_emb.weight"),
        ("llmsrec/heads.safetensors", "cf_item_emb"),
    ):
        tensors = load_file(root / rel)
        tensors[name][COLD] = 0
        save_file(tensors, str(root / rel))
    for rel in ("item_vectors.npy", "popularity.npy"):
        table = np.load(root / rel)
        table[COLD] = 0
        np.save(root / rel, table)
    cold = ColdItems((COLD,), "all-MiniLM-L6-v2", ("toy-000000000000",))
    edit_manifest(root, cold_items=cold.to_dict())
    rehash(root)


@pytest.fixture
def cold_bundle(tmp_path: Path) -> Path:
    root = write_bundle(tmp_path / "bundle")
    make_cold(root)
    return root


def test_cold_items_round_trip_and_need_the_allmrec_part(cold_bundle: Path) -> None:
    manifest = read_manifest(cold_bundle)
    assert manifest.cold_items == ColdItems((COLD,), "all-MiniLM-L6-v2", ("toy-000000000000",))
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert (
        manifest.to_dict()["cold_items"]
        == json.loads((cold_bundle / "manifest.json").read_text())["cold_items"]
    )
    # every table is right; only the part that could rank them is missing
    assert verify_bundle(cold_bundle) == [
        "cold_items need the allmrec part: A-LLMRec's text path is the only one that ranks them"
    ]


def test_a_cold_item_with_a_trained_row_is_named(cold_bundle: Path) -> None:
    table = np.load(cold_bundle / "item_vectors.npy")
    table[COLD] = 1.0
    np.save(cold_bundle / "item_vectors.npy", table)
    rehash(cold_bundle)
    problems = verify_bundle(cold_bundle)
    assert f"item_vectors.npy: cold item(s) [{COLD}] have non-zero rows (a cold item has none)" in problems


def test_a_manifest_without_cold_items_writes_none(tmp_path: Path) -> None:
    raw = read_manifest(write_bundle(tmp_path / "b")).to_dict()
    assert "cold_items" not in raw and Manifest.from_dict(raw).cold_items is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.bool])
def test_row_reader_matches_safetensors(tmp_path: Path, dtype: torch.dtype) -> None:
    table = (torch.randn(7, 3) > 0) if dtype == torch.bool else torch.randn(7, 3).to(dtype)
    path = tmp_path / "t.safetensors"
    save_torch({"other": torch.ones(5), "table": table}, str(path))
    rows = read_safetensors_rows(path, "table", [0, 4, 6])
    expected = table[[0, 4, 6]]
    assert np.array_equal(rows, (expected if dtype == torch.bool else expected.float()).numpy())
