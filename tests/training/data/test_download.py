"""download_dataset against a local HTTP server and file:// URLs: streaming, checksums, zips, atomicity."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.common.errors import DataError
from training.data.dataset import load_prepared
from training.data.download import DATASETS_DOWNLOAD, DownloadSpec, RemoteFile, download_dataset
from training.data.prepare import PrepareConfig, prepare_dataset, resolve_dataset

from .conftest import write_ml100k


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory and the http://127.0.0.1:PORT/ URL that serves it, for the length of one test."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_zip(served_dir: Path, tmp_path: Path) -> Path:
    """A zip shaped like GroupLens' ml-100k.zip: one top-level folder holding u.data and u.item."""
    raw = write_ml100k(
        tmp_path / "zipsrc" / "ml-toy", [(1, 1, 5), (1, 2, 6), (1, 3, 7), (2, 1, 1), (2, 3, 2), (2, 2, 3)]
    )
    archive = served_dir / "ml-toy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(raw.iterdir()):
            zf.write(f, f"ml-toy/{f.name}")
    return archive


def digest(path: Path, name: str) -> str:
    return hashlib.new(name, path.read_bytes()).hexdigest()


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_download_zip_over_http_then_prepare(served, tmp_path: Path) -> None:
    served_dir, url = served
    archive = make_zip(served_dir, tmp_path)
    remote = RemoteFile(
        url + "ml-toy.zip", sha256=digest(archive, "sha256"), md5=digest(archive, "md5"), extract=True
    )
    registry = {"toy": DownloadSpec((remote,), "ml-100k")}
    out = download_dataset("toy", tmp_path / "dest", registry=registry)
    assert out == tmp_path / "dest" / "toy"
    # the zip's top-level folder is flattened and the archive removed
    assert sorted(p.name for p in out.iterdir()) == ["download.json", "u.data", "u.item"]
    assert json.loads((out / "download.json").read_text())["files"][0]["url"] == remote.url
    assert leftovers(out.parent) == []
    data = load_prepared(prepare_dataset(PrepareConfig(dataset="ml-100k"), out, tmp_path / "prepared"))
    assert data.users == ["1", "2"] and data.sequences[1].tolist() == [1, 3, 2]


def test_checksum_mismatch_fails_and_leaves_nothing(served, tmp_path: Path) -> None:
    served_dir, url = served
    make_zip(served_dir, tmp_path)
    remote = RemoteFile(url + "ml-toy.zip", sha256="0" * 64, extract=True)
    registry = {"toy": DownloadSpec((remote,), "ml-100k")}
    with pytest.raises(DataError, match=r"ml-toy\.zip: sha256 mismatch \(expected 0{64}, got [0-9a-f]{64}\)"):
        download_dataset("toy", tmp_path / "dest", registry=registry)
    assert list((tmp_path / "dest").iterdir()) == []


def test_http_error_names_the_url(served, tmp_path: Path) -> None:
    _, url = served
    registry = {"toy": DownloadSpec((RemoteFile(url + "missing.zip"),), "ml-100k")}
    with pytest.raises(DataError, match=r"missing\.zip: download failed \(HTTP Error 404"):
        download_dataset("toy", tmp_path / "dest", registry=registry)
    assert list((tmp_path / "dest").iterdir()) == []


def test_file_url_plain_files_md5_and_reuse(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "reviews_Beauty_5.json.gz").write_bytes(b"reviews")
    (src / "meta_Beauty.json.gz").write_bytes(b"meta")
    files = tuple(
        RemoteFile((src / n).as_uri(), md5=hashlib.md5(c).hexdigest())
        for n, c in (("reviews_Beauty_5.json.gz", b"reviews"), ("meta_Beauty.json.gz", b"meta"))
    )
    registry = {"beauty": DownloadSpec(files, "amazon2014-beauty")}
    out = download_dataset("beauty", tmp_path / "dest", registry=registry)
    assert (out / "reviews_Beauty_5.json.gz").read_bytes() == b"reviews"
    (src / "meta_Beauty.json.gz").write_bytes(b"changed upstream")
    assert download_dataset("beauty", tmp_path / "dest", registry=registry) == out  # present: not fetched
    with pytest.raises(DataError, match=r"meta_Beauty\.json\.gz: md5 mismatch"):
        download_dataset("beauty", tmp_path / "dest", registry=registry, force=True)
    assert (out / "meta_Beauty.json.gz").read_bytes() == b"meta"  # the earlier download is intact
    assert leftovers(tmp_path / "dest") == []


def test_refuses_unknown_names_and_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no download for dataset 'nope'; known: ml-100k, ml-1m"):
        download_dataset("nope", tmp_path)
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not written by `llmrec data download`"):
        download_dataset("ml-100k", tmp_path)


def test_default_registry_is_consistent() -> None:
    for name, spec in DATASETS_DOWNLOAD.items():
        assert all(f.url.startswith("https://") for f in spec.files), name
        assert resolve_dataset(spec.prepare_as) is not None
    assert DATASETS_DOWNLOAD["ml-100k"].files[0].md5 == "0e33842e24a9c977be4e0107933c0723"
