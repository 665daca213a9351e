"""The recommending models one service instance can serve, the one that answers a request naming none, and
the listing of GET /v1/models. The default is LLMREC_DEFAULT_MODEL when set, else the manifest's
`default_model` (chosen at export by models.model_choice), else the same rule over the servable models, else
(no comparable metrics) LLM-SRec when loaded, else SASRec. Framework-free; knows no weights or HTTP."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import StartupError
from models.bundle import Manifest
from models.model_choice import CATALOGUE_RANKERS, RECOMMENDERS, choose_default_model, comparable_metric

DefaultSource = Literal["setting", "manifest", "metrics", "fallback"]
LLM_MODELS = ("llmsrec", "hybrid", "allmrec")  # need the LLM backend; SASRec never does


@dataclass(frozen=True)
class DefaultModel:
    """The model of a request without `model`, what decided it, and why (one sentence)."""

    name: str
    source: DefaultSource
    reason: str


@dataclass(frozen=True)
class ModelInfo:
    """One model of the bundle as GET /v1/models shows it."""

    name: str
    recommends: bool  # a value of `model` in POST /v1/recommend
    servable: bool  # answers POST /v1/recommend now, without falling back
    default: bool
    valid: Mapping[str, Any] | None  # validation metrics recorded at training
    comparable: bool  # a catalogue ranker with valid NDCG@10 on 1+99 candidates: may be the default
    note: str


def resolve_default(manifest: Manifest, servable: Collection[str], setting: str) -> DefaultModel:
    """The default among `servable`; StartupError when the setting names a model this service cannot serve."""
    if setting != "auto":
        if setting not in servable:
            raise StartupError(
                f"LLMREC_DEFAULT_MODEL={setting}, but bundle {manifest.bundle_version} served here offers "
                f"only {', '.join(servable)} (models: {', '.join(manifest.models)})"
            )
        return DefaultModel(setting, "setting", f"LLMREC_DEFAULT_MODEL={setting}")
    choice = choose_default_model(manifest.training, servable)
    recorded = manifest.default_model
    if recorded is not None and recorded in servable:
        why = choice.reason if choice.name == recorded else "recorded at export"
        return DefaultModel(recorded, "manifest", f"the manifest's default_model, {why}")
    if choice.name is not None:
        unservable = f"; the manifest's {recorded} cannot be served here" if recorded else ""
        return DefaultModel(choice.name, "metrics", choice.reason + unservable)
    name = "llmsrec" if "llmsrec" in servable else "sasrec"
    return DefaultModel(name, "fallback", f"{choice.reason}: LLM-SRec when it is served, else SASRec")


def describe_models(
    manifest: Manifest, servable: Collection[str], llm_healthy: bool, default: DefaultModel
) -> list[ModelInfo]:
    """Every model of the bundle, in manifest order, with its validation metrics and whether it serves now."""
    out = []
    for name in manifest.models:
        record = manifest.training.get(name)
        valid = record.get("valid") if isinstance(record, Mapping) else None
        healthy = llm_healthy or name not in LLM_MODELS
        if name not in RECOMMENDERS:
            note = "not a recommender (POST /v1/explain/genre uses it)"
        elif name not in servable:
            note = "not loaded by this service"
        elif not healthy:
            note = "the LLM backend is unhealthy: requests fall back to SASRec (degraded)"
        elif name == "allmrec":
            note = "re-ranks SASRec's top allmrec_candidates items: k may not exceed that count"
        else:
            note = "ok"
        out.append(
            ModelInfo(
                name=name,
                recommends=name in RECOMMENDERS,
                servable=name in servable and healthy,
                default=name == default.name,
                valid=dict(valid) if isinstance(valid, Mapping) else None,
                comparable=name in CATALOGUE_RANKERS
                and comparable_metric(manifest.training, name) is not None,
                note=note,
            )
        )
    return out
