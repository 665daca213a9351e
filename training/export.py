"""Export trained checkpoints into a service bundle (DESIGN §1): check that they belong together, copy and
derive every file into a temp dir beside OUT, write the manifest last, verify, then rename into place.
The layout lives in models/bundle.py, its checks in models/bundle_verify.py; each model contributes a
`ModelPart`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from models.allmrec_scoring import ALLMRecScoring, GenreBlend
from models.bundle import (
    BUNDLE_SCHEMA_VERSION,
    CATALOG_FILE,
    ITEM_VECTORS_FILE,
    LLM_DIR,
    MANIFEST_FILE,
    POPULARITY_FILE,
    BundleError,
    DatasetInfo,
    Dims,
    Manifest,
    compute_bundle_version,
    read_manifest,
    sha256_file,
)
from models.bundle_verify import verify_bundle
from models.hybrid import HybridConfig
from models.model_choice import choose_default_model
from models.sasrec import SASRec
from training.allmrec.checkpoint import STAGE1_FILE, STAGE2_FILE, load_stage2
from training.allmrec.genre import load_genre_checkpoint
from training.common.errors import CheckpointError, ConfigError
from training.common.flags import flag
from training.data.dataset import PreparedData, load_prepared
from training.evaluation.popularity import PopularityScorer
from training.llmsrec.checkpoint import HEADS_FILE, load_llmsrec
from training.llmsrec.checkpoint import ITEM_VECTORS_FILE as LLMSREC_VECTORS_FILE
from training.sasrec.checkpoint import load_sasrec

__all__ = [
    "ModelPart",
    "bullet_list",
    "check_out",
    "export_bundle",
    "publish_bundle",
    "verify_bundle_dir",
    "write_json",
]

log = logging.getLogger(__name__)

# Files of a local LLM directory that a bundle carries: weights as safetensors and the tokenizer; never
# pickled weights or remote code.
LLM_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja", ".tiktoken")


@dataclass(frozen=True)
class ExportConfig:
    """The flags of `llmrec export bundle` besides its paths."""

    include_llm: bool = flag(False, "Copy the LLM's files into the bundle (self-contained).")
    overwrite: bool = flag(False, "Replace an existing bundle at OUT.")


@dataclass
class ModelPart:
    """One model's share of a bundle: `config` goes to <name>/config.json and the manifest section <name>;
    `copies` maps bundle-relative paths to source files."""

    name: str
    config: dict[str, Any]
    copies: dict[str, Path]
    dims: dict[str, Any]
    training: dict[str, Any]
    llm: dict[str, Any] | None = None
    llm_copies: dict[str, Path] = field(default_factory=dict)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read: {err}") from err


def _same(what: str, values: dict[str, Any]) -> None:
    """CheckpointError naming every source when they disagree about `what`."""
    if len({json.dumps(v) for v in values.values()}) > 1:
        listed = ", ".join(f"{source}: {value!r}" for source, value in values.items())
        raise CheckpointError(f"inputs disagree on {what}: {listed}")


def _sasrec_part(ckpt: Path, data: PreparedData) -> tuple[ModelPart, SASRec]:
    model = load_sasrec(ckpt)
    meta = _read_config(ckpt / "config.json")
    _same("the dataset", {f"data {data.root}": data.name, f"SASRec {ckpt}": meta.get("dataset")})
    _same("n_items", {f"data {data.root}": data.n_items, f"SASRec {ckpt}": model.config.n_items})
    part = ModelPart(
        name="sasrec",
        config=dict(meta["model"]),
        copies={"sasrec/model.safetensors": ckpt / "model.safetensors"},
        dims={"cf": model.config.hidden},
        training={k: meta.get(k) for k in ("train", "best_epoch", "valid")},
    )
    return part, model


def _llmsrec_part(ckpt: Path, data: PreparedData, sasrec: SASRec, include_llm: bool) -> ModelPart:
    loaded = load_llmsrec(ckpt)
    cfg, heads, src = loaded.config, loaded.heads.config, f"LLM-SRec {ckpt}"
    _same("the dataset", {f"data {data.root}": data.name, src: cfg["dataset"]})
    _same("n_items", {f"data {data.root}": data.n_items, src: heads.n_items})
    _same("the CF size (SASRec hidden vs LLM-SRec d_cf)", {"SASRec": sasrec.config.hidden, src: heads.d_cf})
    teacher = sasrec.item_embeddings().detach().float().numpy()[1:]
    if not np.allclose(loaded.heads.cf_item_emb.numpy()[1:], teacher, rtol=1e-5, atol=1e-6):
        raise CheckpointError(f"{src} was distilled from another SASRec: its CF item table differs")
    wording = {"data": [data.verb, data.noun], src: [loaded.prompt.verb, loaded.prompt.noun]}
    _same("the prompt wording (verb, noun)", wording)
    spec = dict(cfg["llm"])
    _same("the LLM hidden size", {f"{src} llm": spec.get("hidden_size"), f"{src} model": heads.llm_hidden})
    llm_copies = _llm_files(Path(spec.get("path", "")), src) if include_llm else {}
    if include_llm:
        spec["source_path"], spec["path"] = spec["path"], LLM_DIR
    return ModelPart(
        name="llmsrec",
        config=dict(cfg["model"]) | {"variant": cfg["variant"]},
        copies={
            "llmsrec/heads.safetensors": ckpt / HEADS_FILE,
            ITEM_VECTORS_FILE: ckpt / LLMSREC_VECTORS_FILE,
        },
        dims={"llm_hidden": heads.llm_hidden, "user": heads.user_dim},
        training={k: cfg.get(k) for k in ("train", "best_epoch", "valid")},
        llm=spec,
        llm_copies=llm_copies,
    )


def _hybrid_part(ckpt: Path) -> ModelPart | None:
    """The blend with SASRec an LLM-SRec checkpoint records (config.json `hybrid`), if any: a config only, its
    tables are LLM-SRec's item_vectors.npy and SASRec's item embeddings, which the bundle already has."""
    raw = _read_config(ckpt / "config.json").get("hybrid")
    if raw is None:
        return None
    src = f"{ckpt / 'config.json'}: hybrid"
    try:
        config = HybridConfig.from_dict(raw)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{src} is invalid: {err!r}") from err
    valid = raw.get("valid")
    if not isinstance(valid, dict):
        raise CheckpointError(f"{src}.valid must hold the blend's validation metrics, got {valid!r}")
    return ModelPart("hybrid", config.to_dict(), copies={}, dims={}, training={"valid": valid})


def _allmrec_part(
    name: str, ckpt: Path, data: PreparedData, sasrec: SASRec, llm: dict[str, Any] | None
) -> ModelPart:
    """An A-LLMRec part over this SASRec and this LLM: `allmrec` (the stage 2 trained on next-item titles)
    or `allmrec_genre` (the genre-trained stage 2, plus its genre vocabulary); both with their stage 1."""
    genre = name == "allmrec_genre"
    stage2, cfg = load_genre_checkpoint(ckpt) if genre else load_stage2(ckpt)
    src = f"A-LLMRec {'genre ' if genre else ''}{ckpt}"
    flag = "--allmrec-genre" if genre else "--allmrec"
    _same("the dataset", {f"data {data.root}": data.name, src: cfg.get("dataset")})
    _same("n_items", {f"data {data.root}": data.n_items, src: cfg.get("n_items")})
    if llm is None:
        raise CheckpointError(f"{flag} needs --llmsrec: the service's LLM backend is built around it")
    for key in ("special_tokens", "hidden_size"):
        _same(f"the LLM's {key}", {"LLM-SRec llm": llm.get(key), f"{src} llm": cfg["llm"].get(key)})
    stage1_dir = Path(cfg["stage1_dir"])
    stage1_cfg = _read_config(stage1_dir / "config.json")
    teacher = sasrec.item_embeddings().detach().float()
    cf = load_file(stage1_dir / STAGE1_FILE)["cf_item_emb"].float()
    same = cf.shape == teacher.shape and np.allclose(cf[1:].numpy(), teacher[1:].numpy(), 1e-5, 1e-6)
    if not same:
        raise CheckpointError(f"{src}: its stage 1 ({stage1_dir}) was aligned to another SASRec")
    config = {
        "stage1": dict(stage1_cfg["model"]),
        "stage2": dict(cfg["model"]),
        "prompt": dict(cfg["prompt"]),
    }
    if genre:
        config |= {"genres": list(cfg["genres"]), "genre_template_version": cfg["genre_template_version"]}
        config["blend"] = dict(cfg.get("blend") or asdict(GenreBlend()))  # older checkpoints: the LLM alone
    else:
        config["scoring"] = dict(cfg.get("scoring") or asdict(ALLMRecScoring()))  # older: the paper's sum
    return ModelPart(
        name=name,
        config=config,
        copies={
            f"{name}/stage1.safetensors": stage1_dir / STAGE1_FILE,
            f"{name}/stage2.safetensors": ckpt / STAGE2_FILE,
        },
        dims={"llm_hidden": stage2.config.llm_hidden},
        training={k: cfg.get(k) for k in ("train", "best_epoch", "valid")}
        | _calibration_summary(cfg.get("blend_fit" if genre else "calibration")),
    )


def _calibration_summary(record: dict[str, Any] | None) -> dict[str, Any]:
    """What the manifest keeps of a checkpoint's validation fit (the full table stays in the checkpoint)."""
    if not record:
        return {}
    keep = ("valid", "llm_only", "sasrec", "history_counts")
    return {"calibration": {k: record[k] for k in keep if k in record}}


def _llm_files(path: Path, src: str) -> dict[str, Path]:
    """llm/<name> → file, for the safetensors and tokenizer files of a local LLM directory."""
    if not path.is_dir():
        raise CheckpointError(
            f"--include-llm: the LLM of {src} is at {str(path)!r}, which is not a local directory"
        )
    chosen = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix in LLM_SUFFIXES]
    files = {f"{LLM_DIR}/{p.name}": p for p in chosen}
    if not any(rel.endswith(".safetensors") for rel in files) or f"{LLM_DIR}/config.json" not in files:
        raise CheckpointError(f"--include-llm: {path} holds no config.json + safetensors weights to bundle")
    return files


def bullet_list(lines: list[str]) -> str:
    return "\n".join(f"  - {line}" for line in lines)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_files(tmp: Path, data: PreparedData, parts: list[ModelPart]) -> dict[str, str]:
    """Every file but the manifest; returns relative path → sha256 of what landed on disk."""
    _copy(data.root / "items.jsonl", tmp / CATALOG_FILE)
    with open(tmp / POPULARITY_FILE, "wb") as fh:
        np.save(fh, PopularityScorer(data).counts)  # the evaluated popularity baseline's train counts
    for part in parts:
        write_json(tmp / part.name / "config.json", part.config)
        for rel, src in (part.copies | part.llm_copies).items():
            _copy(src, tmp / rel)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    return {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files}


def _manifest(data: PreparedData, parts: list[ModelPart], files: dict[str, str]) -> Manifest:
    dims: dict[str, Any] = {}
    for part in parts:
        dims |= part.dims
    llm = next((p.llm for p in parts if p.llm is not None), None)
    training = {p.name: p.training for p in parts}
    return Manifest(
        schema_version=BUNDLE_SCHEMA_VERSION,
        bundle_version=compute_bundle_version(data.name, files),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        dataset=DatasetInfo(data.name, data.verb, data.noun, data.n_items, data.n_users, tuple(data.genres)),
        dims=Dims(**dims, item_vectors=(data.n_items + 1, dims["user"]) if "user" in dims else None),
        models=tuple(p.name for p in parts),
        files=files,
        configs={p.name: p.config for p in parts},
        llm=llm,
        training=training,
        default_model=choose_default_model(training, [p.name for p in parts]).name,
    )


def check_out(out: Path, overwrite: bool) -> None:
    """OUT may be replaced only with overwrite=True, and only when it is a bundle or an empty directory."""
    if not out.exists():
        return
    if not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_FILE).is_file()):
        raise ConfigError(f"{out} exists and is not a bundle; refusing to replace it")


def publish_bundle(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished bundle into place; an old OUT is moved aside first and restored on failure."""
    check_out(out, overwrite)
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_bundle(
    data_dir: Path,
    sasrec_dir: Path,
    llmsrec_dir: Path | None,
    out: Path,
    *,
    include_llm: bool = False,
    overwrite: bool = False,
    allmrec_dir: Path | None = None,
    allmrec_genre_dir: Path | None = None,
) -> Path:
    """Write a verified bundle to OUT from a processed dataset, a SASRec and (optionally) an LLM-SRec
    checkpoint, an A-LLMRec stage-2 checkpoint and an A-LLMRec genre checkpoint; include_llm also copies the
    LLM's files into OUT/llm."""
    out = Path(out)
    check_out(out, overwrite)
    if include_llm and llmsrec_dir is None:
        raise ConfigError("--include-llm needs an LLM-SRec checkpoint (--llmsrec)")
    data = load_prepared(Path(data_dir))
    sasrec_part, sasrec = _sasrec_part(Path(sasrec_dir), data)
    parts = [sasrec_part]
    llm = None
    if llmsrec_dir is not None:
        parts.append(_llmsrec_part(Path(llmsrec_dir), data, sasrec, include_llm))
        llm = parts[-1].llm
        parts += [hybrid] if (hybrid := _hybrid_part(Path(llmsrec_dir))) else []
    for name, ckpt in (("allmrec", allmrec_dir), ("allmrec_genre", allmrec_genre_dir)):
        if ckpt is not None:
            parts.append(_allmrec_part(name, Path(ckpt), data, sasrec, llm))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        manifest = _manifest(data, parts, _write_files(tmp, data, parts))
        write_json(tmp / MANIFEST_FILE, manifest.to_dict())  # last: a manifest marks a complete bundle
        problems = verify_bundle(tmp, check_hashes=False)  # hashes were just taken from the written files
        if problems:
            raise CheckpointError("the exported bundle does not verify:\n" + bullet_list(problems))
        publish_bundle(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("bundle %s written to %s (models: %s)", manifest.bundle_version, out, ", ".join(manifest.models))
    choice = choose_default_model(manifest.training, manifest.models)
    log.info("default model: %s (%s)", choice.name or "none recorded, the service decides", choice.reason)
    return out


def verify_bundle_dir(path: Path) -> Manifest:
    """`llmrec export verify`: the manifest of a sound bundle, else CheckpointError listing each problem."""
    problems = verify_bundle(Path(path))
    if problems:
        raise CheckpointError(f"bundle {path} has {len(problems)} problem(s):\n{bullet_list(problems)}")
    try:
        return read_manifest(Path(path))
    except BundleError as err:  # unreachable after a clean verify, kept for a precise error type
        raise CheckpointError(str(err)) from err
