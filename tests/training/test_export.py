"""Bundle export from real (tiny, random) checkpoints written by the training code's own save functions:
round trip, determinism, corruption refused, inconsistent inputs refused, and atomic replacement."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from models.bundle import ITEM_VECTORS_FILE, read_manifest, sha256_file
from models.bundle_verify import verify_bundle
from models.llmsrec import LLMSRec, LLMSRecConfig
from models.prompts import PromptConfig
from models.sasrec import SASRec, SASRecConfig
from training import export
from training.common.errors import CheckpointError, ConfigError
from training.data.readers import RawItem
from training.data.writer import UserSequence, write_processed
from training.export import export_bundle, verify_bundle_dir
from training.llmsrec.checkpoint import checkpoint_config, save_llmsrec
from training.sasrec.checkpoint import load_sasrec, save_checkpoint

N_ITEMS, HIDDEN, LLM_H = 20, 8, 16
SEQUENCES = [[1, 2, 3, 4, 5], [2, 3, 6], [7, 1, 2, 8, 9, 10], [11, 12, 13, 2]]  # train = s[:-2]


def toy_processed(root: Path, name: str = "toy", n_items: int = N_ITEMS) -> Path:
    """A processed dataset directory, written by `llmrec data prepare`'s own writer."""
    items = {str(100 + i): RawItem(f"Film {i}", 1990 + i, ("Drama",)) for i in range(1, n_items + 1)}
    seqs = [(f"u{u}", UserSequence([str(100 + i) for i in s], None)) for u, s in enumerate(SEQUENCES)]
    meta = {"name": name, "verb": "watched", "noun": "movie", "genres": ["Drama"], "source": {}, "config": {}}
    return write_processed(root, meta, items, seqs, removed={})


def write_sasrec(out: Path, n_items: int = N_ITEMS, hidden: int = HIDDEN, dataset: str = "toy") -> SASRec:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=n_items, hidden=hidden, n_blocks=1, max_len=8))
    meta = {
        "format_version": 1,
        "dataset": dataset,
        "model": dataclasses.asdict(model.config),
        "train": {"epochs": 1},
        "best_epoch": 1,
        "valid": {"ndcg@10": 0.1},
    }
    save_checkpoint(out, model, meta, [{"epoch": 1, "loss": 0.7, "valid": {"ndcg@10": 0.1}}])
    return model


def write_llmsrec(
    out: Path,
    teacher: SASRec,
    llm_path: str = "/nonexistent/tiny-llm",
    valid: dict[str, Any] | None = None,
    hybrid: dict[str, Any] | None = None,
) -> None:
    torch.manual_seed(1)
    heads = LLMSRec(
        LLMSRecConfig(N_ITEMS, d_cf=HIDDEN, llm_hidden=LLM_H, user_dim=4, mlp_hidden=8, cf_hidden=8)
    )
    heads.set_cf_item_embeddings(teacher.item_embeddings().detach())
    table = np.random.default_rng(0).standard_normal((N_ITEMS + 1, 4)).astype(np.float32)
    table[0] = 0
    special = {"[HistoryEmb]": 259, "[UserOut]": 260, "[ItemOut]": 261, "pad": 262}
    spec = {
        "id": "tiny",
        "path": llm_path,
        "dtype": "float32",
        "hidden_size": LLM_H,
        "special_tokens": special,
        "pad_token": "[PAD]",
    }
    prompt = PromptConfig("watched", "movie", history_len=10, max_title_tokens=24)
    config = checkpoint_config(
        "toy", spec, heads, prompt, "llmsrec", {"epochs": 1}, Path("sasrec"), 1, valid or {}, hybrid=hybrid
    )
    save_llmsrec(out, heads, table, config)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    teacher = write_sasrec(root / "sasrec")
    llm = root / "tiny-llm"
    llm.mkdir()
    (llm / "config.json").write_text(json.dumps({"hidden_size": LLM_H}))
    (llm / "tokenizer.json").write_text("{}")
    save_file({"w": np.ones((2, 2), np.float32)}, str(llm / "model.safetensors"))
    (llm / "pytorch_model.bin").write_bytes(b"pickle: never bundled")
    write_llmsrec(root / "llmsrec", teacher, str(llm))
    return {"data": toy_processed(root / "data"), "sasrec": root / "sasrec", "llmsrec": root / "llmsrec"}


def run_export(inputs: Mapping[str, Path | None], out: Path, **flags: bool) -> Path:
    data, sasrec = inputs["data"], inputs["sasrec"]
    assert data is not None and sasrec is not None
    return export_bundle(data, sasrec, inputs.get("llmsrec"), out, **flags)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_round_trip(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = run_export(inputs, tmp_path / "bundle")
    assert verify_bundle(out) == []
    manifest = verify_bundle_dir(out)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest.files) == on_disk
    assert all(sha256_file(out / rel) == digest for rel, digest in manifest.files.items())
    assert manifest.models == ("sasrec", "llmsrec")
    assert (manifest.dataset.name, manifest.dataset.n_items, manifest.dataset.n_users) == ("toy", N_ITEMS, 4)
    assert (manifest.dims.cf, manifest.dims.llm_hidden, manifest.dims.user) == (HIDDEN, LLM_H, 4)
    assert manifest.llm is not None and manifest.llm["special_tokens"]["[UserOut]"] == 260
    assert manifest.llm["prompt_template_version"] == "llmsrec-v1" and manifest.llm["history_len"] == 10
    assert manifest.configs["llmsrec"]["variant"] == "llmsrec"
    assert (out / "catalog.jsonl").read_bytes() == (inputs["data"] / "items.jsonl").read_bytes()
    assert (out / ITEM_VECTORS_FILE).read_bytes() == (inputs["llmsrec"] / "item_vectors.npy").read_bytes()
    expected = np.zeros(N_ITEMS + 1, np.float32)
    for seq in SEQUENCES:
        np.add.at(expected, seq[:-2], 1)  # train split only: the last two items are never counted
    np.testing.assert_array_equal(np.load(out / "popularity.npy"), expected)
    assert "llm/config.json" not in manifest.files  # the LLM is referenced, not copied, by default
    assert manifest.default_model is None  # no model has 1+99 validation metrics here: the service decides
    assert "default_model" not in json.loads((out / "manifest.json").read_text())


def valid_record(ndcg: float) -> dict[str, Any]:
    return {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "protocol": "1+99", "split": "valid", "n_users": 4}


BLEND = {"weight": 0.2, "scale_llmsrec": 1.5, "scale_sasrec": 0.5}


def scored_inputs(
    inputs: dict[str, Path], root: Path, ndcg: Mapping[str, float], hybrid: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Copies of the inputs whose checkpoints record 1+99 validation NDCG@10 `ndcg` per model, the LLM-SRec
    one with a hybrid record (default: BLEND with ndcg["hybrid"]), written by checkpoint_config."""
    sasrec = shutil.copytree(inputs["sasrec"], root / "sasrec")
    meta = json.loads((sasrec / "config.json").read_text()) | {"valid": valid_record(ndcg["sasrec"])}
    (sasrec / "config.json").write_text(json.dumps(meta))
    record = BLEND | {"valid": valid_record(ndcg["hybrid"])} if hybrid is None else hybrid
    write_llmsrec(root / "llmsrec", load_sasrec(sasrec), valid=valid_record(ndcg["llmsrec"]), hybrid=record)
    return inputs | {"sasrec": sasrec, "llmsrec": root / "llmsrec"}


def test_hybrid_part_and_default_model_follow_the_validation_metrics(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    ndcg = {"sasrec": 0.30, "llmsrec": 0.35, "hybrid": 0.40}
    out = run_export(scored_inputs(inputs, tmp_path / "in-a", ndcg), tmp_path / "a")
    manifest = verify_bundle_dir(out)
    assert manifest.models == ("sasrec", "llmsrec", "hybrid")
    assert manifest.configs["hybrid"] == BLEND == json.loads((out / "hybrid/config.json").read_text())
    assert {f for f in manifest.files if f.startswith("hybrid/")} == {"hybrid/config.json"}  # tables: theirs
    assert {name: manifest.training[name]["valid"] for name in ndcg} == {
        name: valid_record(value) for name, value in ndcg.items()
    }
    assert manifest.default_model == "hybrid"
    assert json.loads((out / "manifest.json").read_text())["default_model"] == "hybrid"
    for best, swapped in [
        ("sasrec", {"sasrec": 0.40, "llmsrec": 0.35, "hybrid": 0.30}),
        ("llmsrec", {"sasrec": 0.30, "llmsrec": 0.45, "hybrid": 0.40}),
    ]:
        bundle = run_export(scored_inputs(inputs, tmp_path / f"in-{best}", swapped), tmp_path / best)
        assert read_manifest(bundle).default_model == best


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            BLEND | {"weight": 1.5, "valid": {}},
            r"hybrid is invalid: ValueError\('hybrid weight must be in \[0, 1\]",
        ),
        (
            {"weight": 0.2, "scale_sasrec": 1.0, "valid": {}},
            r"hybrid is invalid: KeyError\('scale_llmsrec'\)",
        ),
        (
            BLEND | {"scale_sasrec": 0.0, "valid": {}},
            r"hybrid is invalid: ValueError\('hybrid scales must be > 0",
        ),
        (dict(BLEND), r"hybrid\.valid must hold the blend's validation metrics, got None"),
    ],
)
def test_a_malformed_hybrid_record_is_refused(
    inputs: dict[str, Path], tmp_path: Path, record: dict[str, Any], message: str
) -> None:
    bad = scored_inputs(inputs, tmp_path / "in", {"sasrec": 0.3, "llmsrec": 0.3, "hybrid": 0.3}, record)
    with pytest.raises(CheckpointError, match=message):
        run_export(bad, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_identical_inputs_give_the_same_bundle_version(inputs: dict[str, Path], tmp_path: Path) -> None:
    first = read_manifest(run_export(inputs, tmp_path / "a"))
    second = read_manifest(run_export(inputs, tmp_path / "b"))
    assert first.bundle_version == second.bundle_version and first.files == second.files


def test_sasrec_only_bundle(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = run_export(inputs | {"llmsrec": None}, tmp_path / "bundle")
    manifest = verify_bundle_dir(out)
    assert manifest.models == ("sasrec",) and manifest.llm is None
    assert manifest.dims.item_vectors is None and not (out / ITEM_VECTORS_FILE).exists()


def test_include_llm_copies_safetensors_and_tokenizer_only(inputs: dict[str, Path], tmp_path: Path) -> None:
    manifest = verify_bundle_dir(run_export(inputs, tmp_path / "bundle", include_llm=True))
    assert {f for f in manifest.files if f.startswith("llm/")} == {
        "llm/config.json",
        "llm/model.safetensors",
        "llm/tokenizer.json",
    }
    assert manifest.llm is not None and manifest.llm["path"] == "llm"


def test_include_llm_needs_a_local_llm(inputs: dict[str, Path], tmp_path: Path) -> None:
    teacher = write_sasrec(tmp_path / "sasrec")
    write_llmsrec(tmp_path / "llmsrec", teacher, llm_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(CheckpointError, match="not a local directory"):
        run_export(inputs | {"llmsrec": tmp_path / "llmsrec"}, tmp_path / "bundle", include_llm=True)


def test_corrupted_bundle_is_refused_naming_the_file(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = run_export(inputs, tmp_path / "bundle")
    blob = bytearray((out / "sasrec/model.safetensors").read_bytes())
    blob[-3] ^= 0x01
    (out / "sasrec/model.safetensors").write_bytes(bytes(blob))
    (out / "popularity.npy").unlink()
    with pytest.raises(CheckpointError) as err:
        verify_bundle_dir(out)
    assert "sasrec/model.safetensors: sha256 mismatch" in str(err.value)
    assert "popularity.npy: listed in the manifest but missing" in str(err.value)


@pytest.mark.parametrize(
    ("sasrec_kwargs", "message"),
    [
        ({"n_items": N_ITEMS + 1}, r"inputs disagree on n_items: data .*: 20, SASRec .*: 21"),
        ({"dataset": "ml-1m"}, r"inputs disagree on the dataset: data .*: 'toy', SASRec .*: 'ml-1m'"),
        ({"hidden": HIDDEN * 2}, r"inputs disagree on the CF size .*SASRec: 16, LLM-SRec .*: 8"),
    ],
)
def test_inconsistent_inputs_are_refused(
    inputs: dict[str, Path], tmp_path: Path, sasrec_kwargs: dict, message: str
) -> None:
    write_sasrec(tmp_path / "sasrec", **sasrec_kwargs)
    with pytest.raises(CheckpointError, match=message):
        run_export(inputs | {"sasrec": tmp_path / "sasrec"}, tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sasrec"]  # nothing written


def test_llmsrec_from_another_sasrec_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(5)
    other = SASRec(SASRecConfig(n_items=N_ITEMS, hidden=HIDDEN, n_blocks=1, max_len=8))
    write_llmsrec(tmp_path / "llmsrec", other)
    with pytest.raises(CheckpointError, match="distilled from another SASRec"):
        run_export(inputs | {"llmsrec": tmp_path / "llmsrec"}, tmp_path / "bundle")


def test_existing_out_needs_overwrite_and_must_be_a_bundle(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = run_export(inputs | {"llmsrec": None}, tmp_path / "bundle")
    with pytest.raises(ConfigError, match="already exists"):
        run_export(inputs, out)
    assert read_manifest(run_export(inputs, out, overwrite=True)).models == ("sasrec", "llmsrec")
    assert verify_bundle(out) == []
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match="not a bundle"):
        run_export(inputs, precious, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "keep me"


def fail_on_copy(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Make the exporter's file copy fail (disk full) after `after` successful copies."""
    real, calls = export._copy, []

    def copy(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) > after:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(export, "_copy", copy)


def test_failed_export_leaves_neither_out_nor_temp(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_on_copy(monkeypatch, after=2)
    with pytest.raises(OSError, match="No space left"):
        run_export(inputs, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_failed_reexport_leaves_the_existing_bundle_untouched(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_export(inputs, tmp_path / "bundle")
    before = snapshot(out)
    fail_on_copy(monkeypatch, after=1)  # the catalog is copied, the SASRec weights are not
    with pytest.raises(OSError, match="No space left"):
        run_export(inputs | {"llmsrec": None}, out, overwrite=True)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert verify_bundle(out) == []


def test_failed_swap_restores_the_existing_bundle(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_export(inputs, tmp_path / "bundle")
    before = snapshot(out)
    real_rename = os.rename

    def rename(src: os.PathLike, dst: os.PathLike) -> None:
        if ".tmp-" in Path(src).name:  # the finished new bundle cannot be moved into place
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        run_export(inputs | {"llmsrec": None}, out, overwrite=True)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
