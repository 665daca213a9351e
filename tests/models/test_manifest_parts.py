"""The typed LLM record and prompt sections of a manifest (models.manifest_parts): read from the JSON an
export writes (which stays as it was), turned into the prompt configs training used, and every template
version this code does not know refused by verification, naming the section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import LLM_DIR, BundleError
from models.bundle_verify import load_verified_manifest, verify_bundle
from models.manifest_parts import LLM_KEYS, LLMSpec, allmrec_prompt, template_problems
from models.prompts import ALLMREC_LEAD_TEMPLATE_VERSION, SHORT_TEMPLATE_VERSION, PromptConfig
from tests.models.test_bundle import edit_manifest, rehash, write_bundle

RECORD = {
    "id": "tiny",
    "path": "/models/tiny",
    "dtype": "float32",
    "special_tokens": {"[UserOut]": 5},
    "prompt_template_version": "llmsrec-v1",
    "max_title_tokens": 24,
    "history_len": 10,
}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle")


def test_the_llm_record_is_typed_and_the_manifest_on_disk_unchanged(bundle: Path) -> None:
    manifest = load_verified_manifest(bundle)
    spec = LLMSpec.of(manifest)
    assert spec is not None and spec == LLMSpec(**RECORD)  # type: ignore[arg-type]
    assert manifest.to_dict() == json.loads((bundle / "manifest.json").read_text())  # written as it was read
    assert tuple(RECORD) == LLM_KEYS  # what verification asks of an llm section
    assert spec.prompt(manifest) == PromptConfig("watched", "movie", 10, 24, "llmsrec-v1")
    assert spec.location(bundle) == "/models/tiny" and spec.location(bundle, "/elsewhere") == "/elsewhere"
    bundled = LLMSpec(**(RECORD | {"path": LLM_DIR}))  # type: ignore[arg-type]
    assert bundled.location(bundle) == str(bundle / LLM_DIR)


def test_a_malformed_llm_record_is_a_bundle_error_naming_it(bundle: Path) -> None:
    with pytest.raises(BundleError, match="malformed or missing llm field: KeyError\\('history_len'\\)"):
        LLMSpec.from_dict({k: v for k, v in RECORD.items() if k != "history_len"})
    edit_manifest(bundle, llm=RECORD | {"history_len": "ten"})
    rehash(bundle)
    assert any("malformed or missing llm field" in p for p in verify_bundle(bundle))


def test_an_older_record_with_extra_keys_loads(bundle: Path) -> None:
    edit_manifest(bundle, llm=RECORD | {"hidden_size": 16, "pad_token": "[PAD]"})
    rehash(bundle)
    manifest = load_verified_manifest(bundle)
    assert LLMSpec.of(manifest) == LLMSpec(**RECORD)  # type: ignore[arg-type]
    assert manifest.llm is not None and manifest.llm["pad_token"] == "[PAD]"  # provenance stays


def test_known_templates_pass_and_an_unknown_one_is_refused_naming_it(bundle: Path) -> None:
    edit_manifest(bundle, llm=RECORD | {"prompt_template_version": SHORT_TEMPLATE_VERSION})
    rehash(bundle)
    assert verify_bundle(bundle) == []
    edit_manifest(bundle, llm=RECORD | {"prompt_template_version": "llmsrec-v9"})
    rehash(bundle)
    assert verify_bundle(bundle) == [
        "llm prompt_template_version 'llmsrec-v9' is not one this code knows "
        "(llmsrec-short-v1, llmsrec-v1; re-export the bundle)"
    ]


def test_allmrec_prompt_sections_are_typed_and_their_versions_checked(bundle: Path) -> None:
    raw = json.loads((bundle / "manifest.json").read_text())
    prompt = {"verb": "watched", "noun": "movie", "history_len": 7, "max_title_tokens": 16}
    part = {"prompt": prompt | {"version": ALLMREC_LEAD_TEMPLATE_VERSION, "retired_key": 1}}
    genre = {"prompt": prompt | {"version": "allmrec-v0"}, "genre_template_version": "allmrec-genre-v0"}
    manifest = type(load_verified_manifest(bundle)).from_dict(
        raw
        | {"models": [*raw["models"], "allmrec", "allmrec_genre"], "allmrec": part, "allmrec_genre": genre}
    )
    config = allmrec_prompt(manifest, "allmrec")
    assert (config.history_len, config.max_title_tokens, config.version) == (
        7,
        16,
        ALLMREC_LEAD_TEMPLATE_VERSION,
    )
    problems = template_problems(manifest)
    assert len(problems) == 2
    assert problems[0].startswith("allmrec_genre prompt version 'allmrec-v0' is not one this code knows (")
    assert problems[1].startswith("allmrec_genre genre_template_version 'allmrec-genre-v0' is not one")
