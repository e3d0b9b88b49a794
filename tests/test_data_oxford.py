"""Oxford-IIIT Pet: annotation parsing, resumable checksummed download, extraction, and an
end-to-end offline `oxford` prepare against small archives served from 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinycats.breeds import CAT_BREEDS, OTHER_CLASS
from tinycats.config import DataConfig
from tinycats.data import oxford, prepare
from tinycats.data.oxford import Archive, download, extract_once, parse_annotation_file
from tinycats.data.prepare import prepare_dataset
from tinycats.data.shards import load_manifest
from tinycats.data.synthetic import write_synthetic_folder
from tinycats.errors import DataError

REAL_LIST_TXT = """#Image CLASS-ID SPECIES BREED ID
#ID: 1:37 Class ids
#SPECIES: 1:Cat 2:Dog
#BREED ID: 1-25:Cat 1:12:Dog
#All images with 1st letter as captial are cat images
#images with small first letter are dog images
Abyssinian_100 1 1 1
american_bulldog_100 2 2 1
Sphynx_99 34 1 12
yorkshire_terrier_99 37 2 25
"""


def test_parse_real_list_format(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(REAL_LIST_TXT)
    rows = parse_annotation_file(path)
    assert [(r.name, r.class_id, r.species, r.breed_id) for r in rows] == [
        ("Abyssinian_100", 1, 1, 1),
        ("american_bulldog_100", 2, 2, 1),
        ("Sphynx_99", 34, 1, 12),
        ("yorkshire_terrier_99", 37, 2, 25),
    ]
    assert oxford.row_class(rows[2], include_other=False) == "Sphynx"
    assert oxford.row_class(rows[1], include_other=False) is None
    assert oxford.row_class(rows[1], include_other=True) == OTHER_CLASS


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "trainval.txt"
    path.write_text("Abyssinian_1 1 1 1\nBengal_2 oops 1 2\n")
    with pytest.raises(DataError, match=r"trainval.txt:2 .*Bengal_2"):
        parse_annotation_file(path)


def test_folder_without_annotations_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"no annotations/trainval.txt"):
        oxford.read_oxford_folder(tmp_path, include_other=False)
    with pytest.raises(DataError, match="does not exist"):
        oxford.read_oxford_folder(tmp_path / "nope", include_other=False)


def test_read_folder_labels_and_splits(tmp_path: Path) -> None:
    write_synthetic_folder(tmp_path, trainval=2, test=1, size=32, dogs=2)
    items = oxford.read_oxford_folder(tmp_path, include_other=True)
    assert len(items) == 12 * 3 + 2 * 2
    assert {it.label for it in items} == {*CAT_BREEDS, OTHER_CLASS}
    assert sum(it.split == "test" for it in items) == 12 + 2
    cats_only = oxford.read_oxford_folder(tmp_path, include_other=False)
    assert len(cats_only) == 36 and all(it.path.is_file() for it in cats_only)


# --------------------------------------------------------------------------- a local server


class _Server:
    """Serves `files` with HTTP Range support; `drop[name] = n` cuts the next response
    for that file after n bytes (the connection closes mid-body)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop: dict[str, int] = {}
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.removeprefix("bytes=").split("-")[0]) if header else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if header else 200)
                if header:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = server.drop.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tar_gz(root: Path, member: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root / member, arcname=member)
    return buffer.getvalue()


def test_download_verifies_and_names_file_only_when_good(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    server.files["a.bin"] = data
    dest = download(f"{server.url}/a.bin", tmp_path / "a.bin", _md5(data), progress=False)
    assert dest.read_bytes() == data
    assert not (tmp_path / "a.bin.part").exists()


def test_checksum_mismatch_removes_file(server: _Server, tmp_path: Path) -> None:
    server.files["a.bin"] = b"x" * 5000
    with pytest.raises(DataError, match=r"checksum mismatch for a\.bin .*removed"):
        download(f"{server.url}/a.bin", tmp_path / "a.bin", _md5(b"other"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_with_range(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000  # ~1 MB
    server.files["big.tar.gz"] = data
    server.drop["big.tar.gz"] = 300_000  # the first response dies after 300 kB
    dest = download(
        f"{server.url}/big.tar.gz",
        tmp_path / "big.tar.gz",
        _md5(data),
        progress=False,
        retry_delay=0,
    )
    assert dest.read_bytes() == data
    assert server.ranges == [None, "bytes=300000-"]


def test_partial_file_from_an_earlier_run_is_resumed(server: _Server, tmp_path: Path) -> None:
    data = b"0123456789" * 10_000
    server.files["f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data[:40_000])
    download(f"{server.url}/f.bin", tmp_path / "f.bin", _md5(data), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.ranges == ["bytes=40000-"]


def test_http_404_is_a_data_error(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download(f"{server.url}/missing", tmp_path / "m", "0" * 32, progress=False)


def test_corrupt_archive_is_removed_with_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(_tar_gz_bytes_truncated())
    with pytest.raises(DataError, match=r"archive images.tar.gz is corrupt.*rerun"):
        extract_once(archive, tmp_path / "out", _md5(archive.read_bytes()))
    assert not archive.exists()
    assert not any((tmp_path / "out").iterdir())  # no half-extracted entries left


def _tar_gz_bytes_truncated() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("images/a.jpg")
        payload = bytes(range(256)) * 400
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def test_oxford_source_downloads_extracts_prepares_then_hits_cache(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake"
    write_synthetic_folder(fake, trainval=3, test=1, size=48, dogs=2)
    (fake / "annotations" / "trimaps").mkdir()
    (fake / "annotations" / "trimaps" / "Bengal_trainval0.png").write_bytes(b"trimap")
    (fake / "images" / "Abyssinian_100.mat").write_bytes(b"matlab")  # the real archive has a few
    archives = []
    for member in ("images", "annotations"):
        data = _tar_gz(fake, member)
        server.files[f"{member}.tar.gz"] = data
        archives.append(Archive(f"{server.url}/{member}.tar.gz", _md5(data)))
    monkeypatch.setattr(oxford, "OXFORD_ARCHIVES", tuple(archives))

    cfg = DataConfig(source="oxford", image_size=32, stored_scale=1.0, include_other=True)
    root = tmp_path / "data"
    prepared = prepare_dataset(cfg, root, progress=False)
    assert prepared.name == "oxford-other-s32-v0.1-seed0"
    manifest = load_manifest(prepared)
    assert manifest.classes == [*CAT_BREEDS, OTHER_CLASS]
    assert manifest.total("test") == 12 + 2
    assert manifest.total("train") + manifest.total("val") == 12 * 3 + 2
    assert manifest.source_checksums == {a.filename: f"md5:{a.md5}" for a in archives}
    extracted = root / "oxford-iiit-pet"
    assert (extracted / "annotations" / "trainval.txt").is_file()
    assert not (extracted / "annotations" / "trimaps").exists()  # not needed, not extracted
    assert sorted(p.suffix for p in (extracted / "images").iterdir()) == [".jpg"] * (12 * 4 + 4)

    requests = len(server.ranges)
    monkeypatch.setattr(prepare.oxford, "fetch_oxford", _fail)
    assert prepare_dataset(cfg, root, progress=False) == prepared
    assert len(server.ranges) == requests

    # Another size re-packs from the extracted folder without downloading again.
    monkeypatch.undo()
    monkeypatch.setattr(oxford, "OXFORD_ARCHIVES", tuple(archives))
    other = prepare_dataset(cfg.model_copy(update={"image_size": 16}), root, progress=False)
    assert load_manifest(other).stored_size == 16
    assert len(server.ranges) == requests
    # Photos extracted elsewhere (e.g. local disk when data_root is a network volume).
    scratch = tmp_path / "scratch"
    small = cfg.model_copy(update={"image_size": 20})
    prepare_dataset(small, root, progress=False, extract_dir=scratch)
    assert (scratch / "images").is_dir() and len(server.ranges) == requests


def _fail(*args: object, **kwargs: object) -> None:
    raise AssertionError("a cache hit must not download or decode")


def test_download_checks_free_space_first(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["a.bin"] = b"x" * 50_000
    monkeypatch.setattr(oxford.shutil, "disk_usage", lambda _: _Usage())
    with pytest.raises(DataError, match=r"not enough disk space for downloading a\.bin"):
        download(f"{server.url}/a.bin", tmp_path / "a.bin", _md5(b"x" * 50_000), progress=False)
    assert not (tmp_path / "a.bin").exists()


class _Usage:
    total, used, free = 10**6, 10**6 - 1000, 1000
