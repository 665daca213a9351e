"""The training-side LLM loader: special tokens, freezing, dtype, alias resolution, GGUF cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.prompts import MARKER_TOKENS, PAD_KEY
from models.soft_prompt import add_special_tokens
from tests.models.tiny_llm import one_torch_thread, tiny_llm
from training.common import llm as llm_mod
from training.common.device import resolve_dtype
from training.common.errors import ConfigError
from training.common.llm import assert_frozen, freeze_llm, resolve_llm, tiny_tokenizer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def test_special_tokens_same_ids_every_time_and_idempotent() -> None:
    first, second = tiny_llm(seed=0), tiny_llm(seed=5)
    assert first.special_tokens == second.special_tokens
    assert list(first.special_tokens) == [*MARKER_TOKENS, PAD_KEY]
    rows = first.model.get_input_embeddings().weight.shape[0]
    again = add_special_tokens(first.model, first.tokenizer)  # e.g. an exported tokenizer that has them
    assert again == first.special_tokens
    assert first.model.get_input_embeddings().weight.shape[0] == rows == len(first.tokenizer)


def test_new_embedding_rows_are_deterministic_mean_rows() -> None:
    llm = tiny_llm(seed=3)
    weight = llm.model.get_input_embeddings().weight
    first_new = min(llm.special_tokens.values())
    expected = weight[:first_new].mean(0)
    for token_id in llm.special_tokens.values():
        torch.testing.assert_close(weight[token_id], expected)


def test_existing_pad_token_is_kept() -> None:
    tok = tiny_tokenizer()
    tok.pad_token = "</s>"
    llm = tiny_llm()
    record = add_special_tokens(llm.model, tok)
    assert record[PAD_KEY] == tok.convert_tokens_to_ids("</s>")


def test_freeze_makes_nothing_trainable_and_is_checked() -> None:
    llm = tiny_llm()
    assert all(not p.requires_grad for p in llm.model.parameters()) and not llm.model.training
    llm.model.lm_head.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="not frozen"):
        assert_frozen(llm.model)
    freeze_llm(llm.model)
    llm.model.train()
    with pytest.raises(RuntimeError, match="training=True"):
        assert_frozen(llm.model)


def test_resolve_dtype() -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype 'int8' unknown"):
        resolve_dtype("int8", "cpu")


def test_resolve_llm_paths_and_hf_ids(tmp_path: Path) -> None:
    assert resolve_llm("meta-llama/Llama-3.2-3B-Instruct") == "meta-llama/Llama-3.2-3B-Instruct"
    assert resolve_llm(str(tmp_path)) == str(tmp_path.resolve())


def test_alias_without_its_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(llm_mod.LLM_ALIASES, "nope", ("no_such_package_xyz", "x.gguf", "nope"))
    with pytest.raises(ConfigError, match="needs the Python package 'no_such_package_xyz'"):
        llm_mod.gguf_path("nope")


def test_unloadable_llm_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load LLM"):
        llm_mod.load_llm(str(tmp_path))


@pytest.mark.slow
def test_smollm2_converts_once_to_a_plain_safetensors_cache(tmp_path: Path, caplog) -> None:
    with caplog.at_level("WARNING", logger="training.common.llm"):
        first = llm_mod.load_llm("smollm2", cache_dir=tmp_path)
    assert any("converting" in r.message for r in caplog.records)
    target = tmp_path / "smollm2-135m-instruct"
    assert (target / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    mtime = (target / "model.safetensors").stat().st_mtime
    caplog.clear()
    with caplog.at_level("WARNING", logger="training.common.llm"):
        second = llm_mod.load_llm("smollm2", cache_dir=tmp_path)
    assert not any("converting" in r.message for r in caplog.records)
    assert (target / "model.safetensors").stat().st_mtime == mtime
    assert first.special_tokens == second.special_tokens
    assert first.spec["hidden_size"] == 576 and first.spec["dtype"] == "float32"
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
