"""Title search over the bundle's catalogue (GET /v1/items?query=): case- and accent-insensitive word-prefix
matching, ranked by how well the title matches, then by popularity. Knows no HTTP and no models."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from app.domain import CatalogItem

_NOT_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """'Amélie (2001)' → 'amelie 2001': accents dropped, case folded, punctuation to single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_WORD.sub(" ", plain.casefold()).strip()


class TitleSearch:
    """Built once per bundle: every title normalized, and the popularity order that breaks ties."""

    def __init__(self, items: Sequence[CatalogItem], popularity: np.ndarray) -> None:
        """popularity: (n_items + 1,) interactions per item id (row 0 = padding)."""
        self.items = tuple(items)
        self.titles = [f" {normalize(item.title)} " for item in self.items]  # padded: word match = " w"
        self.popularity = [float(popularity[item.item_id]) for item in self.items]

    def find(self, query: str, limit: int) -> tuple[int, list[CatalogItem]]:
        """(number of matches, the best `limit`). A title matches when every word of the query starts a word
        of it; titles starting with the whole query rank first, then those containing it as words. An empty
        query matches everything, most popular first."""
        phrase = normalize(query)
        words = phrase.split()
        matches = []
        for i, title in enumerate(self.titles):
            if not all(f" {w}" in title for w in words):
                continue
            tier = 0 if title.startswith(f" {phrase}") else 1 if f" {phrase}" in title else 2
            matches.append((tier, -self.popularity[i], self.items[i].item_id, i))
        matches.sort()
        return len(matches), [self.items[i] for *_, i in matches[:limit]]
