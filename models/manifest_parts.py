"""Typed views of the manifest's LLM record and prompt sections: LLMSpec (the `llm` section), the prompt
configs LLM-SRec and A-LLMRec were trained with, and template_problems, the one check that every prompt
template a bundle names is one this code can rebuild. The JSON on disk is unchanged (models.bundle keeps the
sections as read, so older bundles load). Stdlib + models.prompts (models.allmrec_genre for a genre bundle's
template only); knows no weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.bundle import LLM_DIR, MANIFEST_FILE, BundleError, Manifest
from models.prompts import ALLMREC_TEMPLATE_VERSIONS, TEMPLATE_VERSIONS, ALLMRecPromptConfig, PromptConfig

ALLMREC_PARTS = ("allmrec", "allmrec_genre")  # the parts whose config holds an A-LLMRec `prompt` section


@dataclass(frozen=True)
class LLMSpec:
    """The manifest's `llm` section: the LLM the bundle's LLM-based models were trained with, where it is,
    and what the service needs to rebuild LLM-SRec's prompts exactly as in training."""

    id: str
    path: str  # LLM_DIR (bundled with the weights), a local directory or an HF id
    dtype: str  # what training ran it in; serving picks its own (models.runtime)
    special_tokens: Mapping[str, int]  # token → id, as added by models.soft_prompt.add_special_tokens
    prompt_template_version: str
    max_title_tokens: int
    history_len: int

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LLMSpec:
        """The typed section; BundleError naming a missing or malformed key. Extra keys (hidden_size,
        pad_token, ...) are provenance and stay in the manifest."""
        try:
            return cls(
                id=str(raw["id"]),
                path=str(raw["path"]),
                dtype=str(raw["dtype"]),
                special_tokens={str(k): int(v) for k, v in dict(raw["special_tokens"]).items()},
                prompt_template_version=str(raw["prompt_template_version"]),
                max_title_tokens=int(raw["max_title_tokens"]),
                history_len=int(raw["history_len"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{MANIFEST_FILE}: malformed or missing llm field: {err!r}") from err

    @classmethod
    def of(cls, manifest: Manifest) -> LLMSpec | None:
        """The manifest's LLM record; None for a bundle without LLM-based models."""
        return None if manifest.llm is None else cls.from_dict(manifest.llm)

    def location(self, root: Path, override: str | None = None) -> str:
        """Where the LLM lives: the override, the bundle's llm/ directory, or the recorded path / HF id."""
        if override:
            return override
        return str(root / LLM_DIR) if self.path == LLM_DIR else self.path

    def prompt(self, manifest: Manifest) -> PromptConfig:
        """LLM-SRec's prompt: the dataset's wording with this record's sizes and template."""
        return PromptConfig(
            verb=manifest.dataset.verb,
            noun=manifest.dataset.noun,
            history_len=self.history_len,
            max_title_tokens=self.max_title_tokens,
            version=self.prompt_template_version,
        )


LLM_KEYS = tuple(f.name for f in dataclasses.fields(LLMSpec))  # what an `llm` section must hold


def allmrec_prompt(manifest: Manifest, part: str) -> ALLMRecPromptConfig:
    """The A-LLMRec prompt an `allmrec` or `allmrec_genre` part was trained with (unknown keys ignored)."""
    raw = dict(manifest.configs[part]["prompt"])
    names = {f.name for f in dataclasses.fields(ALLMRecPromptConfig)}
    return ALLMRecPromptConfig(**{k: v for k, v in raw.items() if k in names})


def template_problems(manifest: Manifest) -> list[str]:
    """Every prompt template version of the bundle this code does not know (each needs a re-export)."""
    found: list[tuple[str, Any, Collection[str]]] = []  # (where, version, the versions this code knows)
    if "llmsrec" in manifest.models and manifest.llm is not None:
        found.append(
            (
                "llm prompt_template_version",
                manifest.llm.get("prompt_template_version"),
                TEMPLATE_VERSIONS.values(),
            )
        )
    for part in (p for p in ALLMREC_PARTS if p in manifest.models):
        version = dict(manifest.configs[part].get("prompt") or {}).get("version")
        found.append((f"{part} prompt version", version, ALLMREC_TEMPLATE_VERSIONS.values()))
    if "allmrec_genre" in manifest.models:
        # models.allmrec_genre holds the genre wording and pulls torch: imported for a genre bundle only
        from models.allmrec_genre import GENRE_TEMPLATE_VERSION

        version = manifest.configs["allmrec_genre"].get("genre_template_version")
        found.append(("allmrec_genre genre_template_version", version, (GENRE_TEMPLATE_VERSION,)))
    return [
        f"{where} {version!r} is not one this code knows ({', '.join(sorted(known))}; re-export the bundle)"
        for where, version, known in found
        if version not in known
    ]
