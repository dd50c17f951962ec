"""``python -m uvav.prepare``: checksum verification, and the download path with the network faked."""

from __future__ import annotations

import shutil
import tarfile
import urllib.error
from pathlib import Path

import pytest

import uvav.data.av_mnist_sources as prep
from uvav.data.av_mnist import FSDD_COMMIT, MNIST_IMAGES, MNIST_LABELS, MNIST_MIRRORS, RECORDINGS
from uvav.prepare import main

from .conftest import locate_real_root


def copy_tree(real_root: Path, dest: Path) -> Path:
    """A writable copy of the real files (about 30 MB)."""
    shutil.copytree(real_root / RECORDINGS, dest / RECORDINGS)
    for name in (MNIST_IMAGES, MNIST_LABELS):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_root / name, dest / name)
    return dest


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_real_files(real_root: Path) -> None:
    assert prep.verify(real_root) == []
    assert main(["av_mnist", "--root", str(real_root), "--verify-only"]) == 0


@pytest.fixture(scope="module")
def copied_root(tmp_path_factory) -> Path:
    return copy_tree(locate_real_root(), tmp_path_factory.mktemp("copy"))


@pytest.mark.parametrize("victim", [MNIST_LABELS, MNIST_IMAGES, f"{RECORDINGS}/7_theo_31.wav"])
def test_verify_detects_one_changed_byte(copied_root: Path, victim: str) -> None:
    root = copied_root
    flip_byte(root / victim)
    try:
        problems = prep.verify(root)
    finally:
        flip_byte(root / victim)  # undo, for the next case
    assert len(problems) == 1
    named = victim if not victim.startswith(RECORDINGS) else RECORDINGS  # recordings: one combined sum
    assert str(root / named) in problems[0] and "sha256" in problems[0]
    assert prep.verify(root) == []


def test_verify_missing_files(tmp_path: Path) -> None:
    problems = prep.verify(tmp_path)
    assert len(problems) == 3 and all("missing" in p for p in problems)
    assert main(["av_mnist", "--root", str(tmp_path), "--verify-only"]) == 1


def test_prepare_with_faked_downloads(real_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Serve the FSDD archive (built from the real recordings, in codeload's layout) and the MNIST files
    from disk; the first MNIST mirror is down. The result must verify."""
    archive = tmp_path / "fsdd.tar.gz"
    top = f"free-spoken-digit-dataset-{FSDD_COMMIT}"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(real_root / RECORDINGS, arcname=f"{top}/recordings")
        tar.add(real_root / "mnist" / "t10k-labels-idx1-ubyte.gz", arcname=f"{top}/acquire_data/ignored.gz")
    served = {prep.FSDD_ARCHIVE: archive}
    for name in (MNIST_IMAGES, MNIST_LABELS):
        served[MNIST_MIRRORS[1] + Path(name).name] = real_root / name
    fetched = []

    def fake_download(url: str, dest: Path, timeout: float = 60.0) -> None:
        fetched.append(url)
        if url not in served:
            raise urllib.error.URLError("mirror down")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(served[url], dest)

    monkeypatch.setattr(prep, "download", fake_download)
    root = tmp_path / "data"
    assert main(["av_mnist", "--root", str(root)]) == 0
    assert prep.verify(root) == [] and len(list((root / RECORDINGS).glob("*.wav"))) == 3000
    assert not (root / "fsdd" / "acquire_data").exists() and not list(root.rglob("*.tar.gz"))
    assert fetched[0] == prep.FSDD_ARCHIVE and len(fetched) == 5  # archive, then 2 files x 2 mirrors
    fetched.clear()
    flip_byte(root / MNIST_LABELS)  # only the damaged part is fetched again
    assert prep.prepare_av_mnist(root) == [] and len(fetched) == 2


def test_prepare_reports_failed_downloads(tmp_path: Path, monkeypatch) -> None:
    def offline(url: str, dest: Path, timeout: float = 60.0) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(prep, "download", offline)
    with pytest.raises(urllib.error.URLError):
        prep.prepare_av_mnist(tmp_path)
    assert main(["av_mnist", "--root", str(tmp_path)]) == 2
