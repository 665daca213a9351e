"""`download_dataset`: fetch a dataset's official files (streamed, checksum-verified, zips unpacked) into
DEST/NAME atomically. Knows URLs and hashes; knows nothing of the file formats."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from training.common.errors import DataError
from training.data.writer import replace_dir

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
SNAP_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
UCSD_2018 = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/"
HF_2023 = "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw/"
MANIFEST = "download.json"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str | None = None
    md5: str | None = None  # GroupLens publishes MD5 sums (ml-*.zip.md5), not SHA-256
    extract: bool = False  # unpack a zip (a single top-level folder is flattened) and drop the archive


@dataclass(frozen=True)
class DownloadSpec:
    files: tuple[RemoteFile, ...]
    prepare_as: str  # the `--dataset` name that reads these files


DATASETS_DOWNLOAD: dict[str, DownloadSpec] = {
    "ml-100k": DownloadSpec(
        (RemoteFile(GROUPLENS + "ml-100k.zip", md5="0e33842e24a9c977be4e0107933c0723", extract=True),),
        "ml-100k",
    ),
    "ml-1m": DownloadSpec(
        (RemoteFile(GROUPLENS + "ml-1m.zip", md5="c4d9eecfca2ab87c1945afe126590906", extract=True),), "ml-1m"
    ),
    "amazon2014-beauty": DownloadSpec(
        (RemoteFile(SNAP_2014 + "reviews_Beauty_5.json.gz"), RemoteFile(SNAP_2014 + "meta_Beauty.json.gz")),
        "amazon2014-beauty",
    ),
    "amazon2018-all-beauty": DownloadSpec(
        (
            RemoteFile(UCSD_2018 + "categoryFilesSmall/All_Beauty_5.json.gz"),
            RemoteFile(UCSD_2018 + "metaFiles2/meta_All_Beauty.json.gz"),
        ),
        "amazon2018-all-beauty",
    ),
    "amazon2023-all-beauty": DownloadSpec(
        (
            RemoteFile(HF_2023 + "review_categories/All_Beauty.jsonl"),
            RemoteFile(HF_2023 + "meta_categories/meta_All_Beauty.jsonl"),
        ),
        "amazon2023-all-beauty",
    ),
}


def fetch(remote: RemoteFile, target: Path) -> None:
    """Stream `remote.url` to `target`, hashing as it goes; DataError on network or checksum failure."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as response, target.open("wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=None, file=sys.stderr
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    sha256.update(block)
                    md5.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataError(f"{remote.url}: download failed ({err})") from None
    for name, expected, digest in (("sha256", remote.sha256, sha256), ("md5", remote.md5, md5)):
        if expected and digest.hexdigest() != expected.lower():
            raise DataError(f"{remote.url}: {name} mismatch (expected {expected}, got {digest.hexdigest()})")


def extract_zip(archive: Path, into: Path) -> None:
    """Unpack `archive` into `into`; the content of a single top-level folder is moved up."""
    unpacked = into / ".unpacked"
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)  # ZipFile.extract drops absolute and '..' path parts
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive.name}: not a valid zip ({err})") from None
    entries = [p for p in unpacked.iterdir() if p.name != "__MACOSX"]
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
    for child in sorted(root.iterdir()):
        if child.name != "__MACOSX":
            child.rename(into / child.name)
    shutil.rmtree(unpacked)
    archive.unlink()


def file_name(url: str) -> str:
    name = Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1].split("?", 1)[0])).name
    if not name or name in (".", ".."):
        raise DataError(f"{url}: cannot derive a file name")
    return name


def download_dataset(
    name: str,
    dest: Path,
    registry: Mapping[str, DownloadSpec] | None = None,
    force: bool = False,
) -> Path:
    """Fetch dataset `name` into DEST/NAME (returned); an existing DEST/NAME is kept unless `force`."""
    registry = DATASETS_DOWNLOAD if registry is None else registry
    if name not in registry:
        raise DataError(f"no download for dataset {name!r}; known: {', '.join(registry)}")
    spec, out = registry[name], Path(dest) / name
    if out.is_dir() and (out / MANIFEST).is_file() and not force:
        logger.info("%s already downloaded at %s", name, out)
        return out
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise DataError(
            f"{out}: exists and was not written by `llmrec data download`; refusing to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{name}.tmp-"))
    try:
        for remote in spec.files:
            target = tmp / file_name(remote.url)
            fetch(remote, target)
            if remote.extract:
                extract_zip(target, tmp)
        manifest = {"name": name, "prepare_as": spec.prepare_as, "files": [asdict(f) for f in spec.files]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("downloaded %s -> %s", name, out)
    return out
