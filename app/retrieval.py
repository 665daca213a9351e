"""Retrieve → filter → rescore → top-k over an item table: FAISS (the only module importing it; an exact GPU
index on CUDA with a GPU faiss build, else exact or HNSW on the CPU by a size setting) for candidates, then
exact scores and filters as torch ops on the configured device (LLMREC_DEVICE). Knows no LLM or HTTP."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from app.domain import ItemFilters
from app.errors import InvalidRequestError

log = logging.getLogger(__name__)
HNSW_M = 32
GPU_MAX_K = 2048  # FAISS GPU k-selection limit; larger requests are scored exactly by torch instead
IndexKind = Literal["flat", "hnsw", "gpu-flat"]


def faiss_gpu_support() -> tuple[int, bool]:
    """(GPUs this faiss build sees, whether it has GPU index classes); (0, False) for faiss-cpu."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return (int(get_num_gpus()) if get_num_gpus else 0), hasattr(faiss, "StandardGpuResources")


def choose_index_kind(
    n_items: int, exact_max_items: int, device: str, faiss_gpus: int, faiss_has_gpu: bool
) -> IndexKind:
    """GPU brute force when ranking runs on CUDA and faiss can use that GPU (exact at every size: FAISS has
    no GPU HNSW, and a GPU scans 10^6 x 128 floats in milliseconds); else exact or HNSW on the CPU."""
    if device.startswith("cuda") and faiss_has_gpu and faiss_gpus > cuda_index(device):
        return "gpu-flat"
    return "flat" if n_items <= exact_max_items else "hnsw"


def cuda_index(device: str) -> int:
    """'cuda' → 0, 'cuda:N' → N (-1 for a non-CUDA device)."""
    if not device.startswith("cuda"):
        return -1
    return int(device.split(":", 1)[1]) if ":" in device else 0


class ItemIndex:
    """FAISS inner-product index over rows 1..n of an item table; search returns item ids (row numbers)."""

    def __init__(
        self, table: np.ndarray, exact_max_items: int, ef_search: int = 256, device: str = "cpu"
    ) -> None:
        vectors = np.ascontiguousarray(table[1:], dtype=np.float32)  # row 0 is padding
        n, dim = vectors.shape
        self.kind = choose_index_kind(n, exact_max_items, device, *faiss_gpu_support())
        self.max_k = GPU_MAX_K if self.kind == "gpu-flat" else n
        self.index: Any
        if self.kind == "gpu-flat":
            self._gpu_resources = faiss.StandardGpuResources()  # must outlive the index
            config = faiss.GpuIndexFlatConfig()
            config.device = cuda_index(device)
            self.index = faiss.GpuIndexFlatIP(self._gpu_resources, dim, config)
        elif self.kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = ef_search
        self.index.add(vectors)
        self.n_items = n
        log.info("item index: %s over %d items of dim %d", self.kind, n, dim)

    def search(self, users: np.ndarray, n: int) -> np.ndarray:
        """(B, D) → (B, n) item ids, best first; 0 where the index found fewer than n."""
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.index.hnsw.efSearch, n)
        k = min(n, self.n_items, self.max_k)
        _, rows = self.index.search(np.ascontiguousarray(users, dtype=np.float32), k)
        return np.where(rows >= 0, rows + 1, 0)


class Ranker:
    """Top-k items of one table for one user vector: FAISS top-N, then exact dot products on `device`
    among allowed items; exact over every allowed item when the filters leave fewer than k candidates."""

    def __init__(self, table: np.ndarray, device: str, exact_max_items: int, top_n: int) -> None:
        self.index = ItemIndex(table, exact_max_items, device=device)
        self.table = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)).to(device)  # (n+1, D)
        self.top_n = top_n

    def rank(self, user: np.ndarray, allowed: Tensor, k: int, n_blocked: int) -> list[tuple[int, float]]:
        """`allowed` (n+1,) bool on the device; n_blocked = how many top items filters may remove."""
        n_allowed = int(allowed.sum())
        if min(k, n_allowed) == 0:
            return []
        want = min(self.index.n_items, max(self.top_n, k) + n_blocked)
        if n_allowed <= self.top_n or want > self.index.max_k:
            candidates = allowed.nonzero().squeeze(1)  # (C,) few enough (or too many for FAISS): score all
        else:
            ids = torch.from_numpy(self.index.search(user[None, :], want)[0]).to(allowed.device)
            candidates = ids[allowed[ids]]  # (C,) id 0 is never allowed
            if len(candidates) < k:
                candidates = allowed.nonzero().squeeze(1)
        vector = torch.from_numpy(np.asarray(user, dtype=np.float32)).to(self.table.device)
        scores = self.table[candidates] @ vector  # (C,) exact rescoring
        return top_k(candidates, scores, k)


def top_k(ids: Tensor, scores: Tensor, k: int) -> list[tuple[int, float]]:
    """Best k (id, score), ties broken by the lower id (stable sort over ids given in ascending order)."""
    order = torch.argsort(ids)
    ids, scores = ids[order], scores[order]
    best = torch.sort(scores, descending=True, stable=True).indices[:k]
    return list(zip(ids[best].tolist(), scores[best].float().tolist(), strict=True))


class PopularityRanker:
    """Cold start: items by train-split interaction count, most popular first, among allowed items."""

    def __init__(self, popularity: np.ndarray, device: str) -> None:
        scores = torch.from_numpy(np.asarray(popularity, dtype=np.float32)).to(device)
        scores[0] = -1.0
        self.scores = scores
        self.order = torch.sort(scores, descending=True, stable=True).indices  # (n+1,)

    def rank(self, allowed: Tensor, k: int) -> list[tuple[int, float]]:
        chosen = self.order[allowed[self.order]][:k]
        return list(zip(chosen.tolist(), self.scores[chosen].tolist(), strict=True))


class CandidateFilter:
    """Boolean masks (n+1,) of the items a request may receive: caller filters and seen items. Cold items
    (`cold`: added without interactions) are never in `allowed`, which every ranker reads; A-LLMRec reads
    them separately (`allowed_cold`)."""

    def __init__(
        self,
        n_items: int,
        genres: Sequence[str],
        genre_matrix: np.ndarray,
        device: str,
        cold: np.ndarray | None = None,
    ) -> None:
        self.n_items, self.device = n_items, device
        self.genre_index = {g: j for j, g in enumerate(genres)}
        self.genre_matrix = torch.from_numpy(genre_matrix).to(device)  # (n+1, G) bool
        cold = np.zeros(n_items + 1, dtype=bool) if cold is None else cold
        self.cold = torch.from_numpy(cold).to(device)  # (n+1,) bool
        self.has_cold = bool(cold.any())

    def allowed(self, filters: ItemFilters, seen: Sequence[int]) -> tuple[Tensor, int]:
        """(mask of warm items, n_blocked); InvalidRequestError naming genres the catalog does not have."""
        mask, n_blocked = self._mask(filters, seen)
        return mask & ~self.cold, n_blocked

    def allowed_cold(self, filters: ItemFilters, seen: Sequence[int]) -> list[int]:
        """The cold items the filters and seen items allow, ascending."""
        if not self.has_cold:
            return []
        mask, _ = self._mask(filters, seen)
        return (mask & self.cold).nonzero().squeeze(1).tolist()

    def _mask(self, filters: ItemFilters, seen: Sequence[int]) -> tuple[Tensor, int]:
        mask = torch.ones(self.n_items + 1, dtype=torch.bool, device=self.device)
        mask[0] = False
        if filters.genres:
            unknown = sorted(set(filters.genres) - set(self.genre_index))
            if unknown:
                known = ", ".join(self.genre_index) or "none"
                raise InvalidRequestError(
                    f"filters.genres: unknown genre(s) {unknown}; the catalog has: {known}"
                )
            columns = torch.tensor([self.genre_index[g] for g in filters.genres], device=self.device)
            mask &= self.genre_matrix[:, columns].any(dim=1)
        if filters.include_ids is not None:
            include = torch.zeros_like(mask)
            include[self._ids(filters.include_ids)] = True
            mask &= include
        blocked = self._ids([*filters.exclude_ids, *seen])
        mask[blocked] = False
        return mask, len(blocked)

    def _ids(self, ids: Sequence[int]) -> Tensor:
        known = [i for i in set(ids) if 1 <= i <= self.n_items]
        return torch.tensor(sorted(known), dtype=torch.long, device=self.device)
