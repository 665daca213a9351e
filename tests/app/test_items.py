"""GET /v1/items (title search) and GET /v1/items/{item_id} through the real app: word-prefix matching in
any case and without accents, best match first then by popularity, totals and limits, bounds as 422s; and
TitleSearch on a hand-made catalogue whose order can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from app.domain import CatalogItem
from app.search import TitleSearch, normalize
from tests.app.conftest import assert_envelope, serve
from training.tiny_bundle import N_ITEMS, item_genres

pytestmark = pytest.mark.anyio


def catalog(*titles: str) -> list[CatalogItem]:
    return [CatalogItem(i, f"m{i}", t, None, ()) for i, t in enumerate(titles, start=1)]


def test_normalize_drops_case_accents_and_punctuation() -> None:
    assert normalize("Amélie (2001)") == "amelie 2001"
    assert normalize('Film "3" part_3!') == "film 3 part 3"
    assert normalize("  ÉTÉ  ") == "ete"


def test_titles_rank_by_match_then_popularity() -> None:
    items = catalog(
        "The Star Wars Holiday Special",  # 1: contains "star wars" as words
        "Star Wars (1977)",  # 2: starts with it
        "Wars of the Star Kings",  # 3: every word, not as a phrase
        "Starship Troopers",  # 4: "star" is only a prefix of a word, "wars" missing
        "Star Wars: Return of the Jedi",  # 5: starts with it, more popular than 2
        "Mustard Wars",  # 6: "star" inside a word is no match
    )
    popularity = np.array([0, 50, 10, 90, 70, 20, 99], dtype=np.float32)
    search = TitleSearch(items, popularity)
    total, found = search.find("STAR wars", 10)
    assert total == 4 and [i.item_id for i in found] == [5, 2, 1, 3]
    assert search.find("sta", 10)[0] == 5  # a word prefix: Starship too
    assert search.find("zzz", 10) == (0, [])
    total, top = search.find("", 2)  # empty query: everything, most popular first
    assert total == 6 and [i.item_id for i in top] == [6, 3]


async def test_search_through_the_api(make_settings) -> None:
    async with serve(make_settings()) as client:
        found = (await client.get("/v1/items", params={"query": "part 3", "limit": 4})).json()
        quoted = (await client.get("/v1/items", params={"query": '"17" PART', "limit": 5})).json()
        everything = (await client.get("/v1/items", params={"limit": 100})).json()
        one = (await client.get("/v1/items/17")).json()
    # tiny titles are 'Film "i" part {i % 7}'. "part 3" as a phrase: i = 3, 10, ..., 59 (nine items), ranked
    # first; then titles with a word starting with "3" (i = 30..39, eight more)
    assert found["query"] == "part 3" and found["total"] == 9 + 8 and len(found["items"]) == 4
    assert all(item["item_id"] % 7 == 3 for item in found["items"])
    assert [item["item_id"] for item in quoted["items"]] == [17] and quoted["total"] == 1
    assert (
        quoted["items"][0]
        == one
        == {
            "item_id": 17,
            "original_id": "m17",
            "title": 'Film "17" part 3',
            "year": 1980 + 17 % 30,
            "genres": item_genres(17),
            "cold": False,
        }
    )
    assert everything["total"] == N_ITEMS and len(everything["items"]) == N_ITEMS


async def test_search_ties_break_by_popularity(make_settings, tiny_bundle) -> None:
    popularity = np.load(tiny_bundle / "popularity.npy")
    async with serve(make_settings()) as client:
        found = (await client.get("/v1/items", params={"query": "film", "limit": 100})).json()
    ids = [item["item_id"] for item in found["items"]]
    assert ids == sorted(range(1, N_ITEMS + 1), key=lambda i: (-popularity[i], i))


async def test_search_bounds_are_clear_422s(make_settings) -> None:
    async with serve(make_settings()) as client:
        for params, needle in [
            ({"limit": 0}, "query.limit"),
            ({"limit": 101}, "query.limit"),
            ({"limit": "ten"}, "query.limit"),
            ({"query": "x" * 201}, "query.query"),
        ]:
            response = await client.get("/v1/items", params=params)
            assert needle in assert_envelope(response, 422, "validation_error")["message"], params
