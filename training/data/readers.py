"""Readers of raw MovieLens files into one common raw form (`RawDataset`), plus the line helpers all
readers share. Knows file formats; knows nothing of filtering, id assignment or the processed layout."""

from __future__ import annotations

import gzip
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.common.errors import DataError

# u.genre order (u.item flag order); ml-1m uses the same names without "unknown".
ML_GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
ML100K_GENRES = ["unknown", *ML_GENRES]

_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
# "Usual Suspects, The" and "City of Lost Children, The (Cité des enfants perdus, La)"
_ARTICLE = re.compile(r"^(?P<body>.+?), (?P<article>The|A|An)(?P<rest>(?: \(.*\))?)$")

Interaction = tuple[str, str, int | None]  # (original user id, original item id, unix seconds | None)


@dataclass(frozen=True)
class RawItem:
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    description: str = ""  # parsed for Amazon; not written by prepare (the processed format has no field)


@dataclass
class RawDataset:
    """Everything a reader found, in file order; `prepare` turns it into the processed layout."""

    name: str
    verb: str
    noun: str
    interactions: list[Interaction]
    items: dict[str, RawItem]  # original item id -> metadata (may hold items nobody interacted with)
    genres: list[str] = field(default_factory=list)  # known vocabulary, in its canonical order
    files: list[Path] = field(default_factory=list)  # files read, for provenance


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def bad_line(path: Path, lineno: int, why: str) -> DataError:
    return DataError(f"{path}:{lineno}: {why}")


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) for non-blank lines; gzip by suffix; tqdm on a TTY."""
    require_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with (
            opener(path, "rt", encoding=encoding, newline="") as f,
            tqdm(desc=path.name, unit=" lines", disable=None, leave=False, file=sys.stderr) as bar,
        ):
            for lineno, line in enumerate(f, 1):
                if not lineno & 0xFFFF:
                    bar.update(0x10000)
                if line.strip():
                    yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def split_fields(path: Path, lineno: int, line: str, sep: str | None, n: int) -> list[str]:
    """Exactly the first `n` fields (more are allowed and dropped); DataError naming file and line."""
    fields = line.split(sep)
    if len(fields) < n:
        raise bad_line(
            path, lineno, f"expected {n} {sep or 'whitespace'!r}-separated fields, got {len(fields)}"
        )
    return fields[:n]


def parse_int(path: Path, lineno: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad_line(path, lineno, f"{what} {text!r} is not an integer") from None


def check_header(path: Path, lineno: int, line: str, expected: list[str]) -> None:
    if line.split("\t")[: len(expected)] != expected:
        raise bad_line(path, lineno, f"header {line!r} is not {'<TAB>'.join(expected)}")


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A whole (possibly gzipped) text file; DataError naming the file when missing or unreadable."""
    require_file(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return data.decode(encoding)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None


_NOT_TABLE = str.maketrans("", "", "0123456789\t\n")  # deletes what a table may hold


def fast_int_columns(body: str, sep: str, n: int) -> list[list[str]] | None:
    """Columns of `body` when every line is exactly `n` non-empty digit fields joined by `sep`, checked
    with string and numpy operations only (no Python loop per line); None when anything is irregular."""
    text = body if sep == "\t" else body.replace(sep, "\t")
    if not text.endswith("\n"):
        text += "\n"
    if text.translate(_NOT_TABLE) or text.startswith(("\t", "\n")):
        return None
    if any(bad in text for bad in ("\t\t", "\t\n", "\n\t", "\n\n")):
        return None
    chars = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    tabs_before_newline = np.searchsorted(np.flatnonzero(chars == 9), np.flatnonzero(chars == 10))
    if not (np.diff(tabs_before_newline, prepend=0) == n - 1).all():
        return None
    tokens = text.split()
    return [tokens[k::n] for k in range(n)]


def read_int_columns(
    path: Path, sep: str, n: int, header: list[str] | None = None, encoding: str = "utf-8"
) -> list[list[str]]:
    """The first `n` columns (integers, kept as their text) of a `sep`-separated file. A vectorised fast
    path reads regular files; anything else (blank or CRLF lines, extra or bad fields) goes through the
    line-by-line parser, which accepts what it can and names the first bad line."""
    body = read_text(path, encoding)
    if header is not None:
        first, _, body = body.partition("\n")
        check_header(path, 1, first.rstrip("\r"), header)
    columns = fast_int_columns(body, sep, n)
    if columns is not None:
        return columns
    columns = [[] for _ in range(n)]
    for lineno, line in iter_lines(path, encoding):
        if header is not None and lineno == 1:
            continue
        for k, value in enumerate(split_fields(path, lineno, line, sep, n)):
            if not value.strip().isdigit():
                raise bad_line(path, lineno, f"field {k + 1} ({value!r}) is not an integer")
            columns[k].append(value.strip())
    return columns


def pair_keys(users: list[str], items: list[str]) -> np.ndarray:
    """One int64 per (user, item) pair of integer ids, for vectorised joins."""
    return (np.array(users, dtype=np.int64) << 32) | np.array(items, dtype=np.int64)


def split_movie_title(raw: str) -> tuple[str, int | None]:
    """'Usual Suspects, The (1995)' -> ('The Usual Suspects', 1995): year split off, English article moved."""
    title, year = raw.strip(), None
    match = _YEAR.match(title)
    if match:
        title, year = match["title"], int(match["year"])
    article = _ARTICLE.match(title)
    if article:
        title = f"{article['article']} {article['body']}{article['rest']}"
    return title, year


def read_interactions(path: Path, sep: str, encoding: str = "utf-8") -> list[Interaction]:
    """`user sep item sep rating sep timestamp` lines (u.data, ratings.dat) in file order."""
    users, items, _ratings, stamps = read_int_columns(path, sep, 4, encoding=encoding)
    return list(zip(map(sys.intern, users), map(sys.intern, items), map(int, stamps), strict=True))


def read_ml100k_genres(path: Path) -> list[str]:
    """u.genre (`name|index`, blank lines skipped); the fixed list when the file is absent."""
    if not path.is_file():
        return list(ML100K_GENRES)
    names: dict[int, str] = {}
    for lineno, line in iter_lines(path, "latin-1"):
        name, index = split_fields(path, lineno, line, "|", 2)
        names[parse_int(path, lineno, index, "genre index")] = name
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: genre indices {sorted(names)} are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def read_ml100k_items(path: Path, genres: list[str]) -> dict[str, RawItem]:
    """u.item: `id|title (year)|release date|video date|url|` + one 0/1 flag per genre (latin-1)."""
    items: dict[str, RawItem] = {}
    for lineno, line in iter_lines(path, "latin-1"):
        fields = split_fields(path, lineno, line, "|", 5 + len(genres))
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise bad_line(path, lineno, f"genre flags {flags} are not 0/1")
        title, year = split_movie_title(fields[1])
        if year is None and re.fullmatch(r"\d{2}-\w{3}-\d{4}", fields[2]):
            year = int(fields[2][-4:])  # a few titles carry no "(year)"; the release date does
        items[fields[0]] = RawItem(
            title, year, tuple(g for g, f in zip(genres, flags, strict=True) if f == "1")
        )
    return items


def read_ml100k(source: Path) -> RawDataset:
    """MovieLens 100K: u.data (TAB: user item rating timestamp) + u.item (+ u.genre)."""
    genres = read_ml100k_genres(source / "u.genre")
    interactions = read_interactions(source / "u.data", "\t")
    items = read_ml100k_items(source / "u.item", genres)
    files = [p for p in (source / "u.data", source / "u.item", source / "u.genre") if p.is_file()]
    return RawDataset("ml-100k", "watched", "movie", interactions, items, genres, files)


def read_ml1m_movies(path: Path) -> tuple[dict[str, RawItem], list[str]]:
    """movies.dat: `id::Title (Year)::Genre|Genre` (latin-1). Unknown genre names extend the vocabulary."""
    items: dict[str, RawItem] = {}
    for lineno, line in iter_lines(path, "latin-1"):
        movie, raw_title, genre_text = split_fields(path, lineno, line, "::", 3)
        title, year = split_movie_title(raw_title)
        genres = tuple(g for g in genre_text.split("|") if g and g != "(no genres listed)")
        items[movie] = RawItem(title, year, genres)
    extra = sorted({g for item in items.values() for g in item.genres} - set(ML_GENRES))
    return items, ML_GENRES + extra


def read_ml1m_official(source: Path) -> RawDataset:
    """MovieLens 1M as released: ratings.dat (`user::movie::rating::timestamp`) + movies.dat."""
    ratings = source / "ratings.dat"
    if not ratings.is_file() and (source / "ratings.dat.gz").is_file():
        ratings = source / "ratings.dat.gz"
    interactions = read_interactions(ratings, "::", "latin-1")
    items, genres = read_ml1m_movies(source / "movies.dat")
    return RawDataset(
        "ml-1m", "watched", "movie", interactions, items, genres, [ratings, source / "movies.dat"]
    )


def read_ml1m_timestamps(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (user, movie) pair keys and their unix seconds, from the shared 5-core TSV and, when present,
    ratings.part1.dat.gz (the TSV wins where both have a pair; they agree on every overlap)."""
    header = ["user_id", "movie_id", "timestamp"]
    users, movies, stamps = read_int_columns(source / "ml-1m.5core_timestamps.tsv.gz", "\t", 3, header)
    keys, seconds = [pair_keys(users, movies)], [np.array(stamps, dtype=np.int64)]
    part1 = source / "ratings.part1.dat.gz"
    if part1.is_file():
        users, movies, _ratings, stamps = read_int_columns(part1, "::", 4, encoding="latin-1")
        keys.append(pair_keys(users, movies))
        seconds.append(np.array(stamps, dtype=np.int64))
    unique, first = np.unique(np.concatenate(keys), return_index=True)
    return unique, np.concatenate(seconds)[first]


def read_ml1m_shared(source: Path) -> RawDataset:
    """The shared ml-1m: ml-1m.txt.gz `user movie` lines (chronological per user, the order kept) with
    timestamps attached from the 5-core TSV / ratings.part1 where the (user, movie) pair is present."""
    path = source / "ml-1m.txt.gz"
    users, movies = read_int_columns(path, " ", 2)
    known, seconds = read_ml1m_timestamps(source)
    keys = pair_keys(users, movies)
    known = np.append(known, np.iinfo(np.int64).max)  # sentinel: every search lands on a valid index
    at = np.searchsorted(known, keys)
    found = known[at] == keys
    seconds = np.append(seconds, -1)
    stamps = [int(t) if ok else None for t, ok in zip(seconds[at].tolist(), found.tolist(), strict=True)]
    interactions = list(zip(map(sys.intern, users), map(sys.intern, movies), stamps, strict=True))
    items, genres = read_ml1m_movies(source / "movies.dat")
    files = [path, source / "ml-1m.5core_timestamps.tsv.gz", source / "movies.dat"]
    files += [p for p in [source / "ratings.part1.dat.gz"] if p.is_file()]
    return RawDataset("ml-1m", "watched", "movie", interactions, items, genres, files)


def read_ml1m(source: Path) -> RawDataset:
    """ml-1m: the shared files when ml-1m.txt.gz is there, otherwise the official ratings.dat."""
    if (source / "ml-1m.txt.gz").is_file():
        return read_ml1m_shared(source)
    if (source / "ratings.dat").is_file() or (source / "ratings.dat.gz").is_file():
        return read_ml1m_official(source)
    raise DataError(f"{source}: neither ml-1m.txt.gz (shared ml-1m) nor ratings.dat (official ml-1m) found")
