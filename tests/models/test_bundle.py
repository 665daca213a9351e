"""Bundle verification on a small hand-written bundle: a sound one passes, and each kind of damage
(flipped byte, missing file, wrong shapes, unlisted weights, bad schema) is reported naming the culprit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from models.bundle import (
    BUNDLE_SCHEMA_VERSION,
    BundleError,
    Manifest,
    compute_bundle_version,
    read_manifest,
    sha256_file,
)
from models.bundle_verify import load_verified_manifest, verify_bundle

N_ITEMS, CF, LLM_H, USER = 12, 8, 16, 4


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))


def rehash(root: Path) -> dict:
    """Re-list every file with its hash and recompute the version, as an exporter would."""
    raw = json.loads((root / "manifest.json").read_text())
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    raw["files"] = {p.relative_to(root).as_posix(): sha256_file(p) for p in files}
    raw["bundle_version"] = compute_bundle_version(raw["dataset"]["name"], raw["files"])
    _write_json(root / "manifest.json", raw)
    return raw


def _table(rows: int, dim: int, seed: int) -> np.ndarray:
    table = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    table[0] = 0
    return table


def write_bundle(root: Path) -> Path:
    """A complete sasrec + llmsrec bundle with random weights of the right shapes."""
    catalog: list[dict[str, object]] = [
        {"item_id": i, "original_id": str(i), "title": f"T{i}", "year": None, "genres": []}
        for i in range(1, N_ITEMS + 1)
    ]
    root.mkdir(parents=True)
    (root / "catalog.jsonl").write_text("".join(json.dumps(row) + "\n" for row in catalog))
    np.save(root / "popularity.npy", np.arange(N_ITEMS + 1, dtype=np.float32) * (np.arange(N_ITEMS + 1) > 0))
    sasrec = {"n_items": N_ITEMS, "hidden": CF, "n_blocks": 1, "n_heads": 1, "max_len": 5, "dropout": 0.1}
    llmsrec = {
        "n_items": N_ITEMS,
        "d_cf": CF,
        "llm_hidden": LLM_H,
        "user_dim": USER,
        "mlp_hidden": 8,
        "cf_hidden": 8,
        "variant": "llmsrec",
    }
    _write_json(root / "sasrec/config.json", sasrec)
    save_file({"item_emb.weight": _table(N_ITEMS + 1, CF, 0)}, str(root / "sasrec/model.safetensors"))
    _write_json(root / "llmsrec/config.json", llmsrec)
    heads = {
        "cf_item_emb": _table(N_ITEMS + 1, CF, 0),
        "user_out": np.ones(LLM_H, np.float32),
        "item_out": np.ones(LLM_H, np.float32),
    }
    save_file(heads, str(root / "llmsrec/heads.safetensors"))
    np.save(root / "item_vectors.npy", _table(N_ITEMS + 1, USER, 1))
    manifest = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "bundle_version": "",
        "created_at": "2025-01-01T00:00:00+00:00",
        "dataset": {
            "name": "toy",
            "verb": "watched",
            "noun": "movie",
            "n_items": N_ITEMS,
            "n_users": 3,
            "genres": ["Drama"],
        },
        "dims": {"cf": CF, "llm_hidden": LLM_H, "user": USER, "item_vectors": [N_ITEMS + 1, USER]},
        "models": ["sasrec", "llmsrec"],
        "llm": {
            "id": "tiny",
            "path": "/models/tiny",
            "dtype": "float32",
            "special_tokens": {"[UserOut]": 5},
            "prompt_template_version": "llmsrec-v1",
            "max_title_tokens": 24,
            "history_len": 10,
        },
        "sasrec": sasrec,
        "llmsrec": llmsrec,
        "training": {},
        "files": {},
    }
    _write_json(root / "manifest.json", manifest)
    rehash(root)
    return root


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle")


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(root: Path, **changes: object) -> None:
    raw = json.loads((root / "manifest.json").read_text()) | changes
    _write_json(root / "manifest.json", raw)


def test_sound_bundle_verifies_and_manifest_round_trips(bundle: Path) -> None:
    assert verify_bundle(bundle) == []
    manifest = load_verified_manifest(bundle)
    raw = json.loads((bundle / "manifest.json").read_text())
    assert manifest.to_dict() == raw
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert manifest.models == ("sasrec", "llmsrec")
    assert manifest.dims.item_vectors == (N_ITEMS + 1, USER)
    assert manifest.configs["sasrec"]["hidden"] == CF
    assert manifest.bundle_version.startswith("toy-") and len(manifest.bundle_version) == len("toy-") + 12
    with pytest.raises(AttributeError):
        manifest.bundle_version = "x"  # type: ignore[misc]


def test_bundle_version_depends_on_hashes_not_order() -> None:
    files = {"a.npy": "11" * 32, "b/c.json": "22" * 32}
    version = compute_bundle_version("ml-100k", files)
    assert version == compute_bundle_version("ml-100k", dict(reversed(files.items())))
    assert version != compute_bundle_version("ml-100k", files | {"a.npy": "33" * 32})
    assert version != compute_bundle_version("ml-100k", {"a2.npy": "11" * 32, "b/c.json": "22" * 32})
    assert version.startswith("ml-100k-")


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    blob = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several read chunks
    (tmp_path / "blob").write_bytes(blob)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(blob).hexdigest()


def test_flipped_byte_is_refused_naming_the_file(bundle: Path) -> None:
    flip_byte(bundle / "llmsrec/heads.safetensors")
    problems = verify_bundle(bundle)
    assert len(problems) == 1
    assert "llmsrec/heads.safetensors" in problems[0] and "sha256" in problems[0]
    with pytest.raises(BundleError, match=r"llmsrec/heads\.safetensors: sha256 mismatch"):
        load_verified_manifest(bundle)
    assert verify_bundle(bundle, check_hashes=False) == []


def test_missing_file_is_named(bundle: Path) -> None:
    (bundle / "sasrec/model.safetensors").unlink()
    assert verify_bundle(bundle) == ["sasrec/model.safetensors: listed in the manifest but missing"]


def test_item_vectors_shape_mismatch_is_named(bundle: Path) -> None:
    np.save(bundle / "item_vectors.npy", _table(N_ITEMS, USER, 1))  # one row short, hashes updated
    rehash(bundle)
    problems = verify_bundle(bundle)
    assert problems == [
        f"item_vectors.npy: shape ({N_ITEMS}, {USER}) != ({N_ITEMS + 1}, {USER}) "
        "(dataset n_items + 1, dims.user)"
    ]


def test_dims_disagreeing_with_configs_and_weights_are_named(bundle: Path) -> None:
    raw = json.loads((bundle / "manifest.json").read_text())
    edit_manifest(bundle, dims=raw["dims"] | {"cf": CF * 2})
    problems = "\n".join(verify_bundle(bundle))
    assert f"dims.cf {CF * 2} != sasrec hidden {CF}" in problems
    assert "llmsrec d_cf" in problems
    assert "sasrec/model.safetensors: tensor item_emb.weight" in problems


def test_unlisted_weight_file_is_named(bundle: Path) -> None:
    save_file({"w": np.zeros(3, np.float32)}, str(bundle / "sasrec/extra.safetensors"))
    (bundle / "notes.txt").write_text("not a weight file")
    assert verify_bundle(bundle) == [
        "sasrec/extra.safetensors: weight file not listed in the manifest (unknown provenance)"
    ]


def test_catalog_line_count_must_match_n_items(bundle: Path) -> None:
    lines = (bundle / "catalog.jsonl").read_text().splitlines(keepends=True)
    (bundle / "catalog.jsonl").write_text("".join(lines[:-1]))
    rehash(bundle)
    assert verify_bundle(bundle) == [f"catalog.jsonl: {N_ITEMS - 1} lines != dataset n_items {N_ITEMS}"]


def test_schema_version_and_missing_manifest(bundle: Path) -> None:
    edit_manifest(bundle, schema_version=BUNDLE_SCHEMA_VERSION + 1)
    (problem,) = verify_bundle(bundle)
    assert f"schema_version {BUNDLE_SCHEMA_VERSION + 1}" in problem
    (bundle / "manifest.json").unlink()
    (problem,) = verify_bundle(bundle)
    assert "manifest.json is missing" in problem
    with pytest.raises(BundleError, match="not a bundle"):
        read_manifest(bundle)


def test_paths_outside_the_bundle_and_tampered_version_are_refused(bundle: Path) -> None:
    raw = json.loads((bundle / "manifest.json").read_text())
    edit_manifest(bundle, files=raw["files"] | {"../outside.npy": "00" * 32})
    problems = verify_bundle(bundle)
    assert "manifest files: path '../outside.npy' points outside the bundle" in problems
    assert any(p.startswith("bundle_version") for p in problems)  # the listing changed, the version did not


def test_model_config_file_must_equal_manifest_section(bundle: Path) -> None:
    _write_json(bundle / "sasrec/config.json", {"n_items": N_ITEMS, "hidden": CF})
    rehash(bundle)
    assert verify_bundle(bundle) == ["sasrec/config.json: differs from the manifest's config section"]


def test_llmsrec_needs_its_llm_record(bundle: Path) -> None:
    edit_manifest(bundle, llm={"id": "tiny", "path": "llm"})
    problems = verify_bundle(bundle)
    assert "llm.special_tokens is missing" in problems
    assert "llm.path is 'llm' but llm/config.json is not listed in manifest files" in problems


BLEND = {"weight": 0.2, "scale_llmsrec": 1.5, "scale_sasrec": 0.5}


def add_hybrid(root: Path, config: dict[str, object], **manifest: object) -> None:
    """The hybrid part as the export writes it: its config only (the tables are LLM-SRec's and SASRec's)."""
    _write_json(root / "hybrid/config.json", config)
    raw = json.loads((root / "manifest.json").read_text())
    edit_manifest(root, models=[*raw["models"], "hybrid"], hybrid=config, **manifest)
    rehash(root)


def test_a_hybrid_part_and_its_default_model_verify(bundle: Path) -> None:
    add_hybrid(bundle, BLEND, default_model="hybrid")
    assert verify_bundle(bundle) == []
    manifest = load_verified_manifest(bundle)
    assert manifest.models == ("sasrec", "llmsrec", "hybrid") and manifest.configs["hybrid"] == BLEND
    assert manifest.default_model == "hybrid"
    assert manifest.to_dict() == json.loads((bundle / "manifest.json").read_text())


def test_a_hybrid_needs_llmsrec_and_its_files(bundle: Path) -> None:
    add_hybrid(bundle, BLEND)
    edit_manifest(bundle, models=["sasrec", "hybrid"])
    assert verify_bundle(bundle) == ["hybrid needs the llmsrec part (its user and item vectors)"]
    (bundle / "item_vectors.npy").unlink()
    raw = json.loads((bundle / "manifest.json").read_text())
    del raw["files"]["item_vectors.npy"]
    _write_json(bundle / "manifest.json", raw)
    problems = verify_bundle(bundle)
    assert "required file item_vectors.npy is not listed in manifest files" in problems


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            BLEND | {"weight": 1.5},
            "hybrid config is invalid: ValueError('hybrid weight must be in [0, 1], got 1.5')",
        ),
        (
            BLEND | {"scale_sasrec": -1.0},
            "hybrid config is invalid: ValueError('hybrid scales must be > 0, got",
        ),
        ({"weight": 0.2, "scale_llmsrec": 1.5}, "hybrid config is invalid: KeyError('scale_sasrec')"),
        (BLEND | {"bias": 0.1}, "hybrid config has unknown keys ['bias']"),
    ],
)
def test_a_bad_hybrid_config_is_named(bundle: Path, config: dict[str, object], problem: str) -> None:
    add_hybrid(bundle, config)
    problems = verify_bundle(bundle)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_hybrid_config_file_must_equal_manifest_section(bundle: Path) -> None:
    add_hybrid(bundle, BLEND)
    _write_json(bundle / "hybrid/config.json", BLEND | {"weight": 0.9})
    rehash(bundle)
    assert verify_bundle(bundle) == ["hybrid/config.json: differs from the manifest's config section"]


@pytest.mark.parametrize("default", ["hybrid", "allmrec_genre", "popularity"])
def test_default_model_must_be_a_recommender_of_the_bundle(bundle: Path, default: str) -> None:
    edit_manifest(bundle, default_model=default)  # the bundle has sasrec and llmsrec only
    assert verify_bundle(bundle) == [
        f"default_model {default!r} is not a recommending model of this bundle ['sasrec', 'llmsrec']"
    ]
    edit_manifest(bundle, default_model="sasrec")
    assert verify_bundle(bundle) == []
