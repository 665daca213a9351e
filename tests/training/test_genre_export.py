"""Export of A-LLMRec's recommendation and genre models into a bundle: it verifies and loads back with its
vocabulary; export refuses either part without LLM-SRec or over another SASRec, verify names a stage 2 of the
wrong shape; a trained checkpoint loads back as the same encoder; bundles without them stay valid."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.bundle import load_bundle, verify
from models.allmrec_scoring import ALLMRecScoring, GenreBlend
from models.bundle_verify import verify_bundle
from tests.models.tiny_llm import one_torch_thread
from training.allmrec.calibration import BLEND_WEIGHTS
from training.allmrec.checkpoint import STAGE2_FILE, save_module
from training.allmrec.config import GenreTrainConfig
from training.allmrec.genre import load_genre_checkpoint, load_genre_encoder, train_allmrec_genre
from training.common.errors import CheckpointError
from training.common.llm import load_llm
from training.data.dataset import load_prepared
from training.export import export_bundle
from training.tiny_bundle import GENRES, build_genre_bundle, build_tiny_bundle, write_stage1


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("genre_export")
    with one_torch_thread():
        build_tiny_bundle(root)
        build_genre_bundle(root)
    return root


def test_genre_bundle_verifies_and_loads_back(work: Path) -> None:
    bundle_dir = work / "bundle_genre"
    assert verify_bundle(bundle_dir) == []
    bundle = load_bundle(bundle_dir, verify(bundle_dir), "cpu")
    assert bundle.manifest.models == ("sasrec", "llmsrec", "allmrec", "allmrec_genre")
    assert bundle.allmrec is not None and not bundle.allmrec.stage2.training
    assert bundle.genre is not None and bundle.genre.genres == tuple(GENRES)
    assert bundle.genre.prompt.noun == "movie" and not bundle.genre.stage2.training
    assert torch.equal(bundle.genre.stage1.cf_item_emb[1:], bundle.sasrec.item_embeddings().detach()[1:])
    plain = load_bundle(work / "bundle", verify(work / "bundle"), "cpu")
    assert plain.genre is None  # a bundle without the genre part stays valid


def test_trained_checkpoint_reloads_as_the_same_scorer(work: Path) -> None:
    data = load_prepared(work / "data")
    llm = load_llm(str(work / "llm"), device="cpu", dtype="float32")
    encoder, _, config = load_genre_encoder(work / "genre", data, llm=llm)
    assert config["genres"] == GENRES and config["best_epoch"] == 1
    with one_torch_thread(), torch.no_grad():
        first, again = encoder.scores([[1, 2, 3]]), encoder.scores([[1, 2, 3]])
    assert first.shape == (1, len(GENRES)) and torch.equal(first, again)


def test_export_refuses_genre_without_llmsrec(work: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="--allmrec-genre needs --llmsrec"):
        export_bundle(work / "data", work / "sasrec", None, tmp_path / "b", allmrec_genre_dir=work / "genre")
    with pytest.raises(CheckpointError, match="--allmrec needs --llmsrec"):
        export_bundle(work / "data", work / "sasrec", None, tmp_path / "b", allmrec_dir=work / "allmrec")
    assert not (tmp_path / "b").exists()


def test_verify_names_an_allmrec_stage2_of_the_wrong_shape(work: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(work / "bundle_genre", bundle)
    path = bundle / "allmrec" / "stage2.safetensors"
    tensors = load_file(path)
    tensors["user_proj.0.weight"] = tensors["user_proj.0.weight"][:, :-1].contiguous()
    save_file(tensors, str(path))
    problems = verify_bundle(bundle, check_hashes=False)
    assert any("allmrec/stage2.safetensors" in p and "user_proj.0.weight" in p for p in problems), problems
    assert not any(p.startswith("allmrec_genre") or "allmrec_genre/" in p for p in problems), problems


def test_export_refuses_a_stage1_of_another_sasrec(work: Path, tmp_path: Path) -> None:
    stage1 = write_stage1(work, tmp_path / "stage1")
    tensors = load_file(stage1 / "stage1.safetensors")
    tensors["cf_item_emb"] = tensors["cf_item_emb"] + 1.0
    save_file(tensors, str(stage1 / "stage1.safetensors"))
    genre = tmp_path / "genre"
    genre.mkdir()
    config = (
        (work / "genre" / "config.json").read_text().replace(str((work / "stage1").resolve()), str(stage1))
    )
    (genre / "config.json").write_text(config)
    (genre / "stage2.safetensors").write_bytes((work / "genre" / "stage2.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="aligned to another SASRec"):
        export_bundle(
            work / "data", work / "sasrec", work / "llmsrec", tmp_path / "b", allmrec_genre_dir=genre
        )


def test_training_starts_from_a_stage2_checkpoint(work: Path, tmp_path: Path) -> None:
    """--stage2: F_U/F_I start from the recommendation stage 2 (a vanishing lr keeps them there)."""
    init, _ = load_genre_checkpoint(work / "genre")
    with torch.no_grad():
        for p in init.parameters():
            p.add_(0.5)  # distinct from anything the genre run saved
    meta = {"stage": "stage2", "model": dataclasses.asdict(init.config), "dataset": "tiny", "n_items": 60}
    llm_spec = json.loads((work / "genre" / "config.json").read_text())["llm"]
    save_module(tmp_path / "stage2", STAGE2_FILE, init, meta | {"llm": llm_spec})
    config = GenreTrainConfig(epochs=1, lr=1e-12, max_users=4, valid_users=2, device="cpu", progress=False)
    data = load_prepared(work / "data")
    with one_torch_thread():
        train_allmrec_genre(
            data, work / "sasrec", work / "stage1", config, tmp_path / "g", tmp_path / "stage2"
        )
    trained, cfg = load_genre_checkpoint(tmp_path / "g")
    assert cfg["init_stage2"] == str((tmp_path / "stage2").resolve())
    for (name, a), b in zip(trained.state_dict().items(), init.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_calibrations_reach_the_bundle(work: Path) -> None:
    """The genre blend (fit on validation after training) and the A-LLMRec scoring travel into the bundle."""
    _, config = load_genre_checkpoint(work / "genre")
    fit = config["blend_fit"]
    assert config["blend"] == fit["blend"] and len(fit["table"]) == len(BLEND_WEIGHTS)
    assert fit["valid"]["ndcg"] == max(row["ndcg"] for row in fit["table"])
    assert fit["llm_only"]["blend"]["history_weight"] == 0.0 and "ndcg" in fit["history_counts"]
    manifest = json.loads((work / "bundle_genre" / "manifest.json").read_text())
    assert GenreBlend(**manifest["allmrec_genre"]["blend"]) == GenreBlend(**config["blend"])
    ALLMRecScoring(**manifest["allmrec"]["scoring"])  # valid (fit on validation when trained)
    assert manifest["training"]["allmrec_genre"]["calibration"]["valid"] == fit["valid"]
