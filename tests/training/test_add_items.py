"""`llmrec export add-items` on a real tiny bundle whose A-LLMRec stage 1 reads MiniLM text embeddings: the
new bundle verifies and loads, the new items are cold (zero rows in every CF and item table, their own MiniLM
text rows, latents from the text encoder), the input is untouched, a second run appends after the first;
every refusal names its cause, and verify names a broken cold-item invariant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from app.bundle import load_bundle, verify
from llmrec.cli import build_cli
from models.bundle import MANIFEST_FILE, compute_bundle_version, sha256_file
from models.bundle_verify import verify_bundle
from tests.models.tiny_llm import one_torch_thread
from training import add_items as add_items_module
from training.add_items import add_items
from training.allmrec.text_encoder import encode_texts, item_text
from training.common.errors import CheckpointError
from training.data.dataset import Item
from training.tiny_bundle import N_ITEMS, build_genre_bundle, build_tiny_bundle

runner = CliRunner()
NEW = [
    {"item_id": "new-1", "title": "Night of the Lake", "genres": ["Horror"], "year": 2024},
    {"item_id": "new-2", "title": "Laughing Matters", "genres": ["Comedy", "Documentary"]},
]


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_cli(), list(args))
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def write_items(path: Path, rows: list[dict] | list[str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("add_items")
    with one_torch_thread():
        build_tiny_bundle(root)
        build_genre_bundle(root, "minilm")  # root/bundle_minilm: allmrec + allmrec_genre over MiniLM texts
    return root


@pytest.fixture(scope="module")
def cold_bundle(work: Path) -> Path:
    before = file_hashes(work / "bundle_minilm")
    items = write_items(work / "new.jsonl", NEW)
    code, out = invoke(
        "export",
        "add-items",
        "--bundle",
        str(work / "bundle_minilm"),
        "--items",
        str(items),
        "--out",
        str(work / "bundle_cold"),
    )
    assert code == 0, out
    assert "2 cold item(s) (ids 61..62)" in out
    assert file_hashes(work / "bundle_minilm") == before  # the input bundle is only read
    return work / "bundle_cold"


def test_new_items_are_cold_in_every_table(work: Path, cold_bundle: Path) -> None:
    assert verify_bundle(cold_bundle) == []
    code, out = invoke("export", "verify", str(cold_bundle))
    assert code == 0 and out.startswith("ok:")
    old = load_bundle(work / "bundle_minilm", verify(work / "bundle_minilm"), "cpu")
    new = load_bundle(cold_bundle, verify(cold_bundle), "cpu")
    ids = [N_ITEMS + 1, N_ITEMS + 2]
    assert new.manifest.cold_items is not None and list(new.manifest.cold_items.ids) == ids
    assert new.manifest.cold_items.sources == (old.version,) and new.version != old.version
    assert new.catalog.n_items == N_ITEMS + 2 and new.catalog.items[-1].title == "Laughing Matters"
    assert new.catalog.items[-2].original_id == "new-1" and new.catalog.items[-2].year == 2024
    assert torch.equal(new.sasrec.item_emb.weight[: N_ITEMS + 1], old.sasrec.item_emb.weight)
    assert not new.sasrec.item_emb.weight[ids].any()
    assert new.heads is not None and not new.heads.cf_item_emb[ids].any()
    assert new.item_vectors is not None and not new.item_vectors[ids].any()
    assert not new.popularity[ids].any() and np.array_equal(new.popularity[: N_ITEMS + 1], old.popularity)
    texts = [
        item_text(Item(i, r["item_id"], r["title"], r.get("year"), tuple(r["genres"])))
        for i, r in zip(ids, NEW, strict=True)
    ]
    expected = torch.from_numpy(encode_texts(texts))
    assert old.genre is not None and new.genre is not None and new.allmrec is not None
    for part, before in ((new.allmrec.stage1, old.allmrec.stage1), (new.genre.stage1, old.genre.stage1)):
        assert part.cold[ids].all() and not part.cold[: N_ITEMS + 1].any()
        assert not part.cf_item_emb[ids].any()
        assert torch.allclose(part.text_emb[ids], expected, atol=1e-5)
        assert torch.equal(part.text_emb[: N_ITEMS + 1], before.text_emb)
        # the prompt's item token of a cold item comes from its text, through the text encoder
        assert torch.equal(part.item_latents(torch.tensor(ids)), part.text_ae.encode(expected))


def test_a_second_run_appends_after_the_first(work: Path, cold_bundle: Path) -> None:
    items = write_items(work / "more.jsonl", [{"item_id": "new-3", "title": "Third", "genres": ["Drama"]}])
    add_items(cold_bundle, items, work / "bundle_cold2")
    manifest = verify(work / "bundle_cold2")
    assert manifest.cold_items is not None and manifest.cold_items.ids == (61, 62, 63)
    first = verify(cold_bundle).bundle_version
    assert manifest.cold_items.sources[-1] == first and len(manifest.cold_items.sources) == 2
    code, out = invoke(
        "export",
        "add-items",
        "--bundle",
        str(cold_bundle),
        "--items",
        str(write_items(work / "dup.jsonl", NEW[:1])),
        "--out",
        str(work / "never"),
    )
    assert code == 2 and "'new-1' is already in the bundle (item 61)" in out


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [NEW[0], {"item_id": "m3", "title": "Again", "genres": []}],
            "line 2: item_id 'm3' is already in the bundle (item 3)",
        ),
        ([NEW[0], NEW[1], NEW[0]], "line 3: item_id 'new-1' repeats line 1"),
        ([{"item_id": "x", "title": "  ", "genres": []}], "line 1: empty title"),
        ([NEW[0], "{not json"], "line 2: not valid JSON"),
        (["[1, 2]"], "line 1: expected a JSON object"),
        ([{"item_id": "x", "title": "T", "genres": "Drama"}], "line 1: genres must be a list"),
        ([{"item_id": "x", "title": "T", "genres": [], "plot": "..."}], "line 1: unknown field(s) ['plot']"),
        ([{"title": "T", "genres": []}], "line 1: item_id must be a non-empty string"),
        ([{"item_id": "x", "title": "T", "genres": [], "year": "1999"}], "line 1: year must be an integer"),
        ([], "holds no items"),
    ],
)
def test_bad_item_files_are_refused_naming_the_line(work: Path, rows: list, message: str) -> None:
    items = write_items(work / "bad.jsonl", rows)
    out_dir = work / "never-written"
    code, out = invoke(
        "export",
        "add-items",
        "--bundle",
        str(work / "bundle_minilm"),
        "--items",
        str(items),
        "--out",
        str(out_dir),
    )
    assert code == 2 and message in out, out
    assert "Traceback" not in out and not out_dir.exists()


def test_bundles_that_cannot_take_cold_items_are_refused(work: Path) -> None:
    items = str(write_items(work / "ok.jsonl", NEW))
    cases = [
        (work / "nowhere", "no bundle there"),
        (work / "bundle", "has no allmrec part (models: sasrec, llmsrec)"),
    ]
    for bundle, message in cases:
        code, out = invoke(
            "export", "add-items", "--bundle", str(bundle), "--items", items, "--out", str(work / "never")
        )
        assert code == 2 and message in out, out
    src = str(work / "bundle_minilm")
    code, out = invoke("export", "add-items", "--bundle", src, "--items", items, "--out", src)
    assert code == 2 and "is the input bundle" in out


def test_a_text_table_from_another_encoder_is_refused(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = write_items(work / "ok.jsonl", NEW)
    monkeypatch.setattr(add_items_module, "TEXT_DIM", 768)
    with pytest.raises(CheckpointError, match="reads 384-dim text embeddings, all-MiniLM-L6-v2 gives 768"):
        add_items(work / "bundle_minilm", items, work / "never")
    monkeypatch.undo()
    # a table MiniLM did not make from these texts (e.g. a fine-tuned text encoder): the rows disagree
    monkeypatch.setattr(add_items_module, "item_text", lambda item: f"{item.title[::-1]} unrelated words")
    with pytest.raises(CheckpointError, match="--finetune-text-encoder"):
        add_items(work / "bundle_minilm", items, work / "never")
    assert not (work / "never").exists()


def rehash(bundle: Path) -> None:
    """Re-sign a tampered bundle (hashes, version) so that verify reaches the cold-item checks."""
    raw = json.loads((bundle / MANIFEST_FILE).read_text())
    raw["files"] = {rel: sha256_file(bundle / rel) for rel in raw["files"]}
    raw["bundle_version"] = compute_bundle_version(raw["dataset"]["name"], raw["files"])
    (bundle / MANIFEST_FILE).write_text(json.dumps(raw))


def _tamper_tensor(rel: str, name: str, value: float | bool):
    def tamper(bundle: Path) -> None:
        tensors = load_file(bundle / rel)
        tensors[name][N_ITEMS + 1] = value
        save_file(tensors, str(bundle / rel))

    return tamper


def _tamper_catalog(bundle: Path) -> None:
    lines = (bundle / "catalog.jsonl").read_text().splitlines()
    row = json.loads(lines[-1])
    del row["cold"]
    (bundle / "catalog.jsonl").write_text("\n".join([*lines[:-1], json.dumps(row)]) + "\n")


def _tamper_ids(bundle: Path) -> None:
    raw = json.loads((bundle / MANIFEST_FILE).read_text())
    raw["cold_items"]["ids"] = [N_ITEMS + 2, N_ITEMS + 1]
    (bundle / MANIFEST_FILE).write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            _tamper_tensor("sasrec/model.safetensors", "item_emb.weight", 0.5),
            "sasrec/model.safetensors item_emb.weight: cold item(s) [61] have non-zero rows",
        ),
        (
            _tamper_tensor("allmrec/stage1.safetensors", "cf_item_emb", 0.5),
            "allmrec/stage1.safetensors cf_item_emb: cold item(s) [61]",
        ),
        (
            _tamper_tensor("allmrec_genre/stage1.safetensors", "cold", False),
            "cold item(s) [61] are not marked cold",
        ),
        (
            _tamper_tensor("allmrec/stage1.safetensors", "text_emb", 0.0),
            "cold item(s) [61] have no text embedding",
        ),
        (_tamper_catalog, "rows marked cold [61] != manifest cold_items.ids [61, 62]"),
        (_tamper_ids, "cold_items.ids must be ascending, unique item ids"),
    ],
)
def test_verify_names_a_broken_cold_item(cold_bundle: Path, tmp_path: Path, tamper, message: str) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(cold_bundle, bundle)
    tamper(bundle)
    rehash(bundle)
    problems = verify_bundle(bundle)
    assert any(message in p for p in problems), problems
