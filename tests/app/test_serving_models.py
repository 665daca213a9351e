"""app.serving_models on the tiny bundle's real manifest with edited training records: the setting, the
manifest's recorded choice, the metrics over what this service can serve, and the fallback, in that order;
the listing's notes for each kind of model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from app.errors import StartupError
from app.serving_models import DefaultModel, describe_models, resolve_default
from models.bundle import Manifest, read_manifest

ALL = ("sasrec", "llmsrec", "hybrid", "allmrec")


def valid(ndcg: float) -> dict[str, Any]:
    return {"valid": {"ndcg@10": ndcg, "protocol": "1+99"}}


@pytest.fixture
def manifest(tiny_bundle: Path) -> Manifest:
    base = read_manifest(tiny_bundle)
    training = {"sasrec": valid(0.3), "llmsrec": valid(0.2), "hybrid": valid(0.4), "allmrec": valid(0.9)}
    models = (*base.models, "hybrid", "allmrec", "allmrec_genre")
    return dataclasses.replace(base, models=models, training=training, default_model="hybrid")


def test_the_setting_wins_and_must_be_servable(manifest: Manifest) -> None:
    assert resolve_default(manifest, ALL, "allmrec") == DefaultModel(
        "allmrec", "setting", "LLMREC_DEFAULT_MODEL=allmrec"
    )
    with pytest.raises(StartupError, match=r"LLMREC_DEFAULT_MODEL=hybrid, .* offers only sasrec, llmsrec \("):
        resolve_default(manifest, ("sasrec", "llmsrec"), "hybrid")


def test_the_manifests_choice_then_the_metrics_over_what_serves_here(manifest: Manifest) -> None:
    recorded = resolve_default(manifest, ALL, "auto")
    assert (recorded.name, recorded.source) == ("hybrid", "manifest")
    assert recorded.reason.startswith("the manifest's default_model, best validation ndcg@10")
    pinned = resolve_default(dataclasses.replace(manifest, default_model="llmsrec"), ALL, "auto")
    assert (pinned.name, pinned.source, pinned.reason) == (
        "llmsrec",
        "manifest",
        "the manifest's default_model, recorded at export",
    )
    elsewhere = resolve_default(manifest, ("sasrec", "llmsrec"), "auto")  # the hybrid cannot be served
    assert (elsewhere.name, elsewhere.source) == ("sasrec", "metrics")
    assert elsewhere.reason.endswith("; the manifest's hybrid cannot be served here")


def test_without_comparable_metrics_llmsrec_when_served_else_sasrec(manifest: Manifest) -> None:
    bare = dataclasses.replace(manifest, training={}, default_model=None)
    assert resolve_default(bare, ALL, "auto").name == "llmsrec"
    fallback = resolve_default(bare, ("sasrec", "allmrec"), "auto")
    assert (fallback.name, fallback.source) == ("sasrec", "fallback")


def test_the_listing_says_what_serves_now_and_why_not(manifest: Manifest) -> None:
    default = resolve_default(manifest, ALL, "auto")
    listed = {m.name: m for m in describe_models(manifest, ("sasrec", "llmsrec", "allmrec"), False, default)}
    assert list(listed) == [*manifest.models]
    assert listed["sasrec"].servable and listed["sasrec"].note == "ok"
    assert not listed["llmsrec"].servable and "unhealthy" in listed["llmsrec"].note
    assert not listed["hybrid"].servable and listed["hybrid"].note == "not loaded by this service"
    assert listed["hybrid"].default and not listed["sasrec"].default
    assert not listed["allmrec_genre"].recommends and "explain/genre" in listed["allmrec_genre"].note
    healthy = {m.name: m for m in describe_models(manifest, ALL, True, default)}
    assert healthy["allmrec"].servable and "k may not exceed" in healthy["allmrec"].note
    assert not healthy["allmrec"].comparable  # 1+99 metrics, but it only re-ranks SASRec's candidates
    assert healthy["hybrid"].valid == {"ndcg@10": 0.4, "protocol": "1+99"} and healthy["hybrid"].comparable
    assert healthy["allmrec_genre"].valid is None and not healthy["allmrec_genre"].comparable
