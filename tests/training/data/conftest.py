"""Writers of tiny raw datasets in the official formats (the tests write every file they read)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]  # fmt: skip


def write_ml100k(
    root: Path,
    ratings: list[tuple[int, int, int]],
    titles: dict[int, str] | None = None,
    genres: dict[int, list[str]] | None = None,
) -> Path:
    """u.data (user item rating timestamp, TAB) and u.item (latin-1, 19 genre flags) for the rated items."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{u}\t{i}\t{3}\t{t}\n" for u, i, t in ratings]
    (root / "u.data").write_text("".join(lines))
    titles = titles or {}
    genres = genres or {}
    rows = []
    for item in sorted({i for _, i, _ in ratings} | set(titles)):
        flags = "|".join("1" if g in genres.get(item, ["Drama"]) else "0" for g in GENRES)
        title = titles.get(item, f"Movie {item} (1990)")
        rows.append(f"{item}|{title}|01-Jan-1990||http://example.org/{item}|{flags}\n")
    (root / "u.item").write_bytes("".join(rows).encode("latin-1"))
    return root


def write_gz(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(text.encode(encoding))
    return path


@pytest.fixture()
def toy_ml100k(tmp_path: Path) -> Path:
    """4 users x 5 items, timestamps out of file order, one tie."""
    ratings = [
        (2, 3, 300), (1, 1, 100), (1, 2, 50), (2, 1, 100), (1, 3, 100), (2, 5, 200),
        (3, 4, 10), (3, 1, 20), (3, 2, 30), (1, 4, 400), (4, 1, 1),
    ]  # fmt: skip
    return write_ml100k(tmp_path / "raw", ratings, titles={4: "Usual Suspects, The (1995)"})
