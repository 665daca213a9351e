"""Every reader on small slices of its official format, written here; errors name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.common.errors import DataError
from training.data.readers import (
    RawItem,
    fast_int_columns,
    read_int_columns,
    read_ml1m,
    read_ml1m_official,
    read_ml1m_shared,
    read_ml100k,
    split_movie_title,
)
from training.data.readers_amazon import read_amazon, read_amazon_beauty_shared

from .conftest import write_gz, write_ml100k


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("Usual Suspects, The (1995)", "The Usual Suspects", 1995),
        ("Good, The Bad and The Ugly, The (1966)", "The Good, The Bad and The Ugly", 1966),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
         "The City of Lost Children (Cité des enfants perdus, La)", 1995),
        ("Man for All Seasons, A (1966)", "A Man for All Seasons", 1966),
        ("Brother, Can You Spare a Dime? (1975)", "Brother, Can You Spare a Dime?", 1975),
        ("unknown", "unknown", None),
    ],
)  # fmt: skip
def test_split_movie_title(raw: str, title: str, year: int | None) -> None:
    assert split_movie_title(raw) == (title, year)


def test_ml100k_reader(tmp_path: Path) -> None:
    root = write_ml100k(
        tmp_path,
        [(196, 242, 881250949), (186, 302, 891717742)],
        titles={242: "Kolya (1996)", 302: "L.A. Confidential (1997)", 5: "Café au lait (1994)"},
        genres={242: ["Comedy"], 302: ["Crime", "Film-Noir", "Mystery", "Thriller"]},
    )
    (root / "u.genre").write_text(
        "".join(f"{g}|{k}\n" for k, g in enumerate(["unknown", *"ABCDEFGHIJKLMNOPQR"])) + "\n"
    )
    raw = read_ml100k(root)
    assert (raw.verb, raw.noun) == ("watched", "movie")
    assert raw.interactions == [("196", "242", 881250949), ("186", "302", 891717742)]
    assert raw.genres[:3] == ["unknown", "A", "B"] and len(raw.genres) == 19  # names come from u.genre
    assert raw.items["5"] == RawItem("Café au lait", 1994, ("H",))  # latin-1 decoded; default genre Drama = H
    assert raw.items["302"].genres == ("F", "J", "M", "P")


def test_ml100k_reader_errors(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path, [(1, 1, 5), (1, 2, 6)])
    (root / "u.data").write_text("1\t1\t3\t5\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"u\.data:2: expected 4"):
        read_ml100k(root)
    (root / "u.data").write_text("1\t1\t3\t5\n1\t2\t3\tlater\n")
    with pytest.raises(DataError, match=r"u\.data:2: field 4 \('later'\) is not an integer"):
        read_ml100k(root)
    (root / "u.item").unlink()
    (root / "u.data").write_text("1\t1\t3\t5\n")
    with pytest.raises(DataError, match=r"u\.item: file not found"):
        read_ml100k(root)


def test_ml1m_official_reader(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    movies = [
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical",
        "3::Misérables, Les (1995)::Drama|Western",
    ]
    (tmp_path / "movies.dat").write_bytes("".join(m + "\n" for m in movies).encode("latin-1"))
    raw = read_ml1m(tmp_path)  # falls back to the official layout
    assert raw.interactions == [("1", "1193", 978300760), ("1", "661", 978302109), ("2", "1193", 978298413)]
    assert raw.items["661"] == RawItem(
        "James and the Giant Peach", 1996, ("Animation", "Children's", "Musical")
    )
    assert raw.items["3"].title == "Misérables, Les"  # only English articles move
    assert raw.genres[0] == "Action" and len(raw.genres) == 18
    (tmp_path / "movies.dat").write_text("1::Title only\n")
    with pytest.raises(DataError, match=r"movies\.dat:1: expected 3"):
        read_ml1m_official(tmp_path)


def test_ml1m_shared_reader_keeps_file_order_and_attaches_timestamps(tmp_path: Path) -> None:
    write_gz(tmp_path / "ml-1m.txt.gz", "1 30\n1 10\n1 20\n2 10\n2 40\n")
    write_gz(
        tmp_path / "ml-1m.5core_timestamps.tsv.gz",
        "user_id\tmovie_id\ttimestamp\n1\t10\t500\n1\t30\t500\n1\t20\t600\n2\t10\t7\n",
    )
    write_gz(tmp_path / "ratings.part1.dat.gz", "1::30::5::499\n2::40::3::9\n", "latin-1")
    (tmp_path / "movies.dat").write_text(
        "10::Ten (1990)::Drama\n20::Twenty (1991)::Comedy\n30::Thirty (1992)::War\n40::Forty (1993)::Horror\n"
    )
    raw = read_ml1m(tmp_path)
    # order is the ml-1m.txt order; the 5-core TSV wins over ratings.part1 (1,30); part1 fills (2,40)
    assert raw.interactions == [
        ("1", "30", 500),
        ("1", "10", 500),
        ("1", "20", 600),
        ("2", "10", 7),
        ("2", "40", 9),
    ]
    (tmp_path / "ratings.part1.dat.gz").unlink()
    assert read_ml1m_shared(tmp_path).interactions[-1] == ("2", "40", None)
    write_gz(tmp_path / "ml-1m.5core_timestamps.tsv.gz", "user\tmovie\tts\n")
    with pytest.raises(DataError, match=r"ml-1m\.5core_timestamps\.tsv\.gz:1: header"):
        read_ml1m_shared(tmp_path)


def test_ml1m_reader_without_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"neither ml-1m\.txt\.gz .* nor ratings\.dat"):
        read_ml1m(tmp_path)


def test_amazon2014_reader_parses_json_reviews_and_python_literal_meta(tmp_path: Path) -> None:
    reviews = [
        {"reviewerID": "A2", "asin": "B01", "unixReviewTime": 1300000000, "overall": 5.0},
        {"reviewerID": "A1", "asin": "B02", "unixReviewTime": 1200000000, "reviewText": "nice"},
    ]
    write_gz(tmp_path / "reviews_Beauty_5.json.gz", "".join(json.dumps(r) + "\n" for r in reviews))
    meta = [
        {"asin": "B01", "title": "Rose &amp; Oud Cream", "description": "Smells nice", "price": 9.99,
         "categories": [["Beauty", "Skin Care", "Face"], ["Beauty", "Fragrance"]]},
        {"asin": "B02", "categories": [["Beauty"]], "salesRank": {"Beauty": 5}},  # no title
        {"asin": "B99", "title": "Nobody bought this"},
    ]  # fmt: skip
    write_gz(tmp_path / "meta_Beauty.json.gz", "".join(repr(m) + "\n" for m in meta))
    raw = read_amazon(tmp_path, "amazon2014")  # the category is found from meta_Beauty.json.gz
    assert (raw.verb, raw.noun) == ("purchased", "item")
    assert raw.interactions == [("A2", "B01", 1300000000), ("A1", "B02", 1200000000)]
    assert raw.items == {
        "B01": RawItem("Rose & Oud Cream", None, ("Skin Care", "Face", "Fragrance"), "Smells nice"),
        "B02": RawItem("", None, (), ""),
    }  # B99 is never interacted with: not parsed


def test_amazon2018_reader(tmp_path: Path) -> None:
    reviews = [{"reviewerID": "U1", "asin": "X1", "unixReviewTime": 1500000000, "verified": True}]
    write_gz(tmp_path / "All_Beauty_5.json.gz", "".join(json.dumps(r) + "\n" for r in reviews))
    meta = {
        "asin": "X1",
        "title": "Soap",
        "category": ["All Beauty", "Bath"],
        "description": ["Clean.", "Fresh."],
    }
    write_gz(tmp_path / "meta_All_Beauty.json.gz", json.dumps(meta) + "\n")
    raw = read_amazon(tmp_path, "amazon2018", "All_Beauty")
    assert raw.interactions == [("U1", "X1", 1500000000)]
    assert raw.items["X1"] == RawItem("Soap", None, ("Bath",), "Clean. Fresh.")


def test_amazon2023_reader_uses_parent_asin_and_millisecond_timestamps(tmp_path: Path) -> None:
    reviews = [
        {"rating": 5.0, "title": "review title", "asin": "C1", "parent_asin": "P1", "user_id": "AG",
         "timestamp": 1588615855070},
        {"rating": 3.0, "asin": "C2", "parent_asin": "P1", "user_id": "AH", "timestamp": 1588615856999},
    ]  # fmt: skip
    (tmp_path / "All_Beauty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    meta = {
        "main_category": "All Beauty",
        "title": "Lip Balm",
        "categories": [],
        "description": [],
        "parent_asin": "P1",
    }
    (tmp_path / "meta_All_Beauty.jsonl").write_text(json.dumps(meta) + "\n")
    raw = read_amazon(tmp_path, "amazon2023")
    assert raw.interactions == [("AG", "P1", 1588615855), ("AH", "P1", 1588615856)]
    assert raw.items == {"P1": RawItem("Lip Balm")}


def test_amazon_reader_errors(tmp_path: Path) -> None:
    (tmp_path / "All_Beauty.jsonl").write_text(
        '{"user_id": "a", "parent_asin": "p", "timestamp": 1}\n{"user_id": "b"}\n'
    )
    (tmp_path / "meta_All_Beauty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"All_Beauty\.jsonl:2: missing field 'parent_asin'"):
        read_amazon(tmp_path, "amazon2023")
    (tmp_path / "All_Beauty.jsonl").write_text("not json at all\n")
    with pytest.raises(DataError, match=r"All_Beauty\.jsonl:1: neither a JSON object nor a Python dict"):
        read_amazon(tmp_path, "amazon2023")
    (tmp_path / "meta_Other.jsonl").write_text("")
    with pytest.raises(DataError, match=r"several categories \['All_Beauty', 'Other'\]"):
        read_amazon(tmp_path, "amazon2023")
    with pytest.raises(DataError, match=r"Toys\.jsonl\.gz: file not found \(also tried Toys\.jsonl\)"):
        read_amazon(tmp_path, "amazon2023", "Toys")


def test_amazon_beauty_shared_reader(tmp_path: Path) -> None:
    write_gz(
        tmp_path / "interactions.tsv.gz", "user_id\titem_id\ttimestamp\n1\t2\t1405296000\n1\t1\t1405296000\n"
    )
    (tmp_path / "items.tsv").write_text(
        'item_id\ttitle\tasin\n1\tL&apos;Oreal "True Match" &amp; Co\t7806397051\n2\tGel 1oz.\t\n'
    )
    raw = read_amazon_beauty_shared(tmp_path)
    assert raw.interactions == [("1", "2", 1405296000), ("1", "1", 1405296000)]
    assert raw.items == {"1": RawItem('L\'Oreal "True Match" & Co'), "2": RawItem("Gel 1oz.")}
    write_gz(tmp_path / "interactions.tsv.gz", "user_id\titem_id\ttimestamp\n1\t2\n")
    with pytest.raises(DataError, match=r"interactions\.tsv\.gz:2: expected 3"):
        read_amazon_beauty_shared(tmp_path)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "interactions.tsv.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match=r"interactions\.tsv\.gz: cannot read"):
        read_amazon_beauty_shared(tmp_path)


@pytest.mark.parametrize(
    "body",
    ["1\t2\t3\t4\n5\t6\n", "1\t\t3\n", "1\t2\t3\n\n4\t5\t6\n", "1\t2\t3\r\n", "1\t2\tx\n", "\t1\t2\n", ""],
)
def test_fast_path_declines_irregular_tables(body: str) -> None:
    assert fast_int_columns(body, "\t", 3) is None


def test_irregular_but_valid_files_parse_like_regular_ones(tmp_path: Path) -> None:
    regular = tmp_path / "regular.dat"
    regular.write_text("1::10::5::100\n2::20::4::200")  # no final newline: still the fast path
    assert fast_int_columns(regular.read_text(), "::", 4) is not None
    irregular = tmp_path / "irregular.dat"
    irregular.write_bytes(b"1::10::5::100\r\n\r\n2::20::4::200::extra\r\n")  # CRLF, blank line, extra field
    expected = [["1", "2"], ["10", "20"], ["5", "4"], ["100", "200"]]
    assert read_int_columns(regular, "::", 4) == read_int_columns(irregular, "::", 4) == expected
