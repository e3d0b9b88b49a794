"""The Oxford-IIIT Pet dataset: download once (resumable, checksummed), extract once, parse.

The official archives unpack into `images/` and `annotations/`; a local folder in that
same layout (e.g. ../shared/data/oxford-cats-mini) is read by the same parser, so the
downloaded dataset and a hand-made folder go through one code path.

Annotation lines are `<image> <class_id 1..37> <species 1=cat 2=dog> <breed_id>`; the
official `list.txt` starts with `#` comment lines. A cat's breed_id (1..12) indexes
`CAT_BREEDS`; dogs become the optional class `other`.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinycats.breeds import CAT_BREEDS, OTHER_CLASS
from tinycats.data.progress import make_progress
from tinycats.errors import DataError
from tinycats.storage.atomic import fsync_dir, write_bytes_atomic

DATA_DIR_FIX = "choose another data folder (--data-dir, or --set data.dir=PATH for train)"
"""The fix for a data folder that cannot be used, naming the options of both commands."""


@dataclass(frozen=True)
class Archive:
    """One official archive and the md5 that torchvision's OxfordIIITPet checks it against."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


OXFORD_ARCHIVES: tuple[Archive, ...] = (
    Archive(
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
        "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    ),
    Archive(
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
        "95a8c909bbe2e81eed6a22bccdf3f68f",
    ),
)
"""The official archives (same URLs and md5 values as torchvision.datasets.OxfordIIITPet)."""

ANNOTATION_FILES = ("trainval.txt", "test.txt")
"""The official split files: every image of the prepared dataset comes from one of them."""

CAT_SPECIES, DOG_SPECIES = 1, 2
_CHUNK = 1 << 20
_DOWNLOAD_ATTEMPTS = 5

Opener = Callable[..., Any]
"""`urllib.request.urlopen`-compatible callable: (Request, timeout=...) -> response."""


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class AnnotationRow:
    """One line of an annotation file: the image stem and its labels (1-based, as written)."""

    name: str
    class_id: int
    species: int
    breed_id: int


def parse_annotation_file(path: Path) -> list[AnnotationRow]:
    """Rows of one annotation file; `#` comments and blank lines are ignored.

    A malformed line is an error, not a skip: it means the file is not in the dataset's
    format, and silently guessing would mislabel images.
    """
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        try:
            name, class_id, species, breed_id = fields[0], *map(int, fields[1:4])
            if len(fields) != 4 or species not in (CAT_SPECIES, DOG_SPECIES):
                raise ValueError
        except ValueError:
            raise DataError(
                f"{path}:{lineno} is not '<image> <class_id> <species 1|2> <breed_id>': "
                f"{text!r}; fix or remove that line"
            ) from None
        rows.append(AnnotationRow(name, class_id, species, breed_id))
    return rows


def row_class(row: AnnotationRow, include_other: bool) -> str | None:
    """The class name of a row, or None when the row is not part of the dataset (a dog
    without --include-other)."""
    if row.species == DOG_SPECIES:
        return OTHER_CLASS if include_other else None
    if not 1 <= row.breed_id <= len(CAT_BREEDS):
        raise DataError(
            f"cat image {row.name!r} has breed_id {row.breed_id}; expected 1..{len(CAT_BREEDS)} "
            "(check the annotation file)"
        )
    return CAT_BREEDS[row.breed_id - 1]


@dataclass(frozen=True)
class FolderItem:
    """An image of a folder in Oxford layout, with its class name and official split."""

    path: Path
    name: str
    label: str
    split: str  # "trainval" | "test"


def read_oxford_folder(root: Path, include_other: bool) -> list[FolderItem]:
    """Every image listed in `annotations/trainval.txt` and `test.txt` of a folder.

    Files named by the annotations but missing on disk are kept here (the packer counts
    them as skipped) so the manifest says how many were missing.
    """
    if root.is_file():
        raise DataError(
            f"data folder {root} is a file; name a folder in Oxford layout (images/, "
            "annotations/), or synthetic | oxford"
        )
    if not root.is_dir():
        raise DataError(
            f"data folder {root} does not exist; check the folder passed as --data (data.source)"
        )
    ann_dir = root / "annotations"
    missing = [f for f in ANNOTATION_FILES if not (ann_dir / f).is_file()]
    if missing:
        raise DataError(
            f"{root} has no annotations/{missing[0]}; a dataset folder needs images/ and "
            f"annotations/{{{','.join(ANNOTATION_FILES)}}} as in the Oxford-IIIT Pet archives"
        )
    items = []
    for filename in ANNOTATION_FILES:
        split = filename.removesuffix(".txt")
        for row in parse_annotation_file(ann_dir / filename):
            label = row_class(row, include_other)
            if label is not None:
                items.append(
                    FolderItem(root / "images" / f"{row.name}.jpg", row.name, label, split)
                )
    return items


def annotation_checksums(root: Path) -> dict[str, str]:
    """sha256 of the split files: identifies the exact labelling a folder was prepared from."""
    return {
        f"annotations/{f}": "sha256:" + file_digest(root / "annotations" / f, "sha256")
        for f in ANNOTATION_FILES
    }


def write_oxford_layout(root: Path, rows: dict[str, list[AnnotationRow]]) -> None:
    """Write annotation files for images already in `root/images` (split name -> rows).

    The inverse of the parser: tests and benchmarks build small folders with it, so
    knowledge of the format stays in this module. `list.txt` gets the official header.
    """
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    header = "#Image CLASS-ID SPECIES BREED ID\n#SPECIES: 1:Cat 2:Dog\n"
    every = []
    for split, split_rows in rows.items():
        lines = [f"{r.name} {r.class_id} {r.species} {r.breed_id}\n" for r in split_rows]
        (ann / f"{split}.txt").write_text("".join(lines))
        every += lines
    (ann / "list.txt").write_text(header + "".join(sorted(every)))


# --------------------------------------------------------------------------- download


def file_digest(path: Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_free_space(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DataError(
            f"not enough disk space for {what}: needs {needed / 1e9:.2f} GB in {directory}, "
            f"{free / 1e9:.2f} GB free; free some space or " + DATA_DIR_FIX
        )


def _total_size(resp: Any, offset: int) -> int | None:
    """Full file size from Content-Range (a resumed 206) or Content-Length (a fresh 200)."""
    content_range = resp.headers.get("Content-Range")
    if content_range and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def download(
    url: str,
    dest: Path,
    md5: str,
    *,
    progress: bool = True,
    opener: Opener = urllib.request.urlopen,
    attempts: int = _DOWNLOAD_ATTEMPTS,
    retry_delay: float = 1.0,
) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part` with an HTTP Range request.

    The file only gets its final name after its md5 matched, so an existing `dest` is a
    verified download and is returned at once. A dropped connection is retried from the
    byte where it stopped; a checksum mismatch deletes the file (a resume would keep the
    bad bytes) and raises DataError.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    with make_progress(progress, transfer=True) as bar:
        task = bar.add_task(f"download {dest.name}", total=None)
        for attempt in range(attempts):
            if attempt:
                time.sleep(retry_delay)
            offset = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with opener(urllib.request.Request(url, headers=headers), timeout=60) as resp:
                    if resp.status != 206:  # the server ignored the Range: start over
                        offset = 0
                    total = _total_size(resp, offset)
                    if total is not None:
                        _check_free_space(dest.parent, total - offset, f"downloading {dest.name}")
                    bar.update(task, total=total, completed=offset)
                    with part.open("ab" if offset else "wb") as f:
                        while chunk := resp.read(_CHUNK):
                            f.write(chunk)
                            bar.advance(task, len(chunk))
                if total is not None and part.stat().st_size < total:
                    raise http.client.IncompleteRead(b"", total - part.stat().st_size)
                break
            except urllib.error.HTTPError as err:
                if err.code == 416 and offset:  # Range starts at the end: already complete
                    break
                if err.code < 500:
                    raise DataError(
                        f"download of {url} failed: HTTP {err.code}; check the URL"
                    ) from None
                last_error = err
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise DataError(
                        f"disk full while downloading {dest.name}; free space and rerun (it resumes)"
                    ) from None
                last_error = err
            except http.client.HTTPException as err:
                last_error = err
        else:
            raise DataError(
                f"download of {url} failed after {attempts} attempts ({last_error!r}); "
                "check the network and rerun: it resumes where it stopped"
            )
    got = file_digest(part, "md5")
    if got != md5:
        part.unlink()
        raise DataError(
            f"checksum mismatch for {dest.name} (md5 {got}, expected {md5}); the file was "
            "removed, rerun to download it again"
        )
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def wanted_member(name: str) -> bool:
    """Archive members the dataset needs: the photos and the split lists. The
    segmentation trimaps and XML boxes (~11,000 files) are left in the archive, since
    every extracted file counts against a network volume's file budget."""
    if name.startswith("images/"):
        return name.endswith(".jpg")
    return name in {f"annotations/{f}" for f in ("list.txt", *ANNOTATION_FILES)}


def extract_once(archive: Path, dest_dir: Path, md5: str) -> None:
    """Unpack the wanted members of `archive` into `dest_dir`, unless a marker says this
    exact archive already was.

    Extraction goes into a temporary folder whose top-level entries are moved into
    place, then the marker is written: an interrupted extraction is simply redone. A
    corrupt archive is deleted so the next run downloads it again.
    """
    marker = dest_dir / f".extracted-{archive.name}-{md5}"
    if marker.exists():
        return
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".tmp-extract-{uuid.uuid4().hex[:8]}"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # one sequential pass over the gzip stream
                if member.isfile() and wanted_member(member.name):
                    tar.extract(member, tmp, filter="data")
        if not tmp.is_dir():
            raise tarfile.TarError("no images/*.jpg or annotations/*.txt inside")
        for entry in tmp.iterdir():
            target = dest_dir / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise DataError(
                f"disk full while extracting {archive.name}; free space and rerun"
            ) from None
        archive.unlink(missing_ok=True)
        raise DataError(
            f"archive {archive.name} is corrupt ({type(err).__name__}: {err}); it was removed, "
            "rerun to download it again"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(dest_dir)  # the extracted entries are durable before the marker says so
    write_bytes_atomic(marker, f"{archive.name} md5 {md5}\n".encode())


def fetch_oxford(
    data_root: Path, *, progress: bool = True, extract_dir: Path | None = None
) -> tuple[Path, dict[str, str]]:
    """Download the official archives into `data_root/downloads` and extract them once.

    The photos go to `extract_dir` (default `data_root/oxford-iiit-pet`): ~7,400 files,
    which a caller whose data_root is a network volume may prefer on local disk; only the
    two archives and the packed shards then live on the volume. Returns the folder in
    Oxford layout and the archives' checksums for the manifest. OXFORD_ARCHIVES is read
    at call time, so tests can point it at a local server.
    """
    root = extract_dir if extract_dir is not None else data_root / "oxford-iiit-pet"
    checksums = {}
    for archive in OXFORD_ARCHIVES:
        path = download(
            archive.url, data_root / "downloads" / archive.filename, archive.md5, progress=progress
        )
        extract_once(path, root, archive.md5)
        checksums[archive.filename] = f"md5:{archive.md5}"
    return root, checksums
