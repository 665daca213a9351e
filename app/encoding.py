"""The encode stage of /v1/recommend: a known history → the user vector a ranker scores. LLM-SRec's comes
through the LLM stage (cache → micro-batched LLM → fallback), SASRec's from the model in process, the
hybrid's is both side by side (models.hybrid); when the LLM does not answer, SASRec's vector answers instead
(degraded). Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from app.backends.base import LLMBackend
from app.batcher import BatchFn
from app.bundle import ServingBundle
from app.cache import VECTOR
from app.domain import Event
from app.llm_stage import LLMStage, StageAnswer, StageSpec
from app.metrics import elapsed_ms
from models.hybrid import hybrid_user_vectors
from models.prompts import cut_history

UserVector = Literal["llmsrec", "hybrid", "sasrec"]  # whose user vector a model ranks with
USER_VECTORS = StageSpec(kind="uv", label="llm", what="LLM", codec=VECTOR)


@dataclass(frozen=True)
class UserJob:
    """What the LLM needs for one LLM-SRec prompt: the history window (oldest first) and its timestamps."""

    items: tuple[int, ...]
    timestamps: tuple[float, ...] | None


@dataclass(frozen=True)
class UserEncoding:
    """How the user is represented: the strategy that will rank, its vector, what happened on the way."""

    strategy: UserVector  # whose vector it is, and so which item table ranks it
    vector: np.ndarray
    cache_hit: bool = False
    degraded_reason: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)


def user_vectors_fn(backend: LLMBackend) -> BatchFn[UserJob, np.ndarray]:
    """The LLM stage's blocking batch function: one backend forward for the batch, a float32 row per job."""

    def run(jobs: Sequence[UserJob]) -> list[np.ndarray]:
        vectors = backend.encode_users([j.items for j in jobs], [j.timestamps for j in jobs])
        return list(np.asarray(vectors, dtype=np.float32))

    return run


class UserEncoder:
    def __init__(self, bundle: ServingBundle, stage: LLMStage[UserJob, np.ndarray] | None) -> None:
        """stage: LLM-SRec's user vectors; None without an LLM backend (then only SASRec encodes)."""
        self.bundle, self.stage = bundle, stage
        self.llm_dim = None if bundle.item_vectors is None else bundle.item_vectors.shape[1]
        kinds: list[UserVector] = ["sasrec"]  # the user vectors this encoder can produce
        if stage is not None and self.llm_dim is not None:
            kinds += ["llmsrec", "hybrid"] if bundle.hybrid is not None else ["llmsrec"]
        self.kinds = tuple(kinds)

    async def encode(self, kind: UserVector, known: Sequence[Event]) -> UserEncoding:
        """`kind`'s vector of a non-empty known history; SASRec's (degraded) when the LLM fails."""
        llm = await self._llm_vector(known) if kind != "sasrec" else None
        if llm is not None and llm.value is not None and kind == "llmsrec":
            return UserEncoding("llmsrec", llm.value, llm.cache_hit, timing_ms=llm.timing_ms)
        timing = dict(llm.timing_ms) if llm is not None else {}
        start = time.perf_counter()
        sasrec = await asyncio.to_thread(self._sasrec_vector, [e.item_id for e in known])
        timing["sasrec"] = elapsed_ms(start)
        if llm is None or llm.value is None:  # sasrec asked, or the LLM failed (degraded)
            reason = None if llm is None else llm.failure
            return UserEncoding("sasrec", sasrec, degraded_reason=reason, timing_ms=timing)
        assert self.bundle.hybrid is not None  # in `kinds` only with its part
        user = hybrid_user_vectors(llm.value[None], sasrec[None], self.bundle.hybrid)[0]  # (D_u + D_cf,)
        return UserEncoding("hybrid", user, llm.cache_hit, timing_ms=timing)

    async def _llm_vector(self, known: Sequence[Event]) -> StageAnswer[np.ndarray]:
        """LLM-SRec's vector through the LLM stage, cached under exactly what the prompt shows."""
        assert self.stage is not None and self.bundle.prompt is not None
        prompt = self.bundle.prompt
        window = known[-prompt.history_len :]
        items = tuple(e.item_id for e in window)
        timed = all(e.timestamp is not None for e in window)
        stamps = tuple(float(e.timestamp or 0) for e in window) if timed else None
        shown, dates = cut_history(items, stamps, prompt.history_len)
        dates = dates if prompt.shows_dates else None  # the short template prints no dates
        return await self.stage.run(
            [prompt.version, shown, dates], UserJob(items, stamps), lambda v: v.shape == (self.llm_dim,)
        )

    def _sasrec_vector(self, items: Sequence[int]) -> np.ndarray:
        """SASRec user vector of the last max_len items (no padding needed for one sequence)."""
        model = self.bundle.sasrec
        seq = torch.tensor(
            [list(items)[-model.config.max_len :]], dtype=torch.long, device=model.item_emb.weight.device
        )
        with torch.inference_mode():
            return model.user_vector(seq)[0].float().cpu().numpy()  # (d_cf,)
