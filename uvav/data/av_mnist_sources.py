"""Where AV-MNIST-lite's files come from and where they lie: their layout under ``data.root``, the pinned public
sources and their sha256 sums; downloading and verifying them (``python -m uvav.prepare av_mnist --root DIR
[--verify-only]``).

AV-MNIST-lite needs FSDD's recordings (GitHub archive of a fixed commit) and MNIST's t10k files (public
mirrors), laid out as ``DIR/fsdd/recordings/*.wav`` and ``DIR/mnist/t10k-*-ubyte.gz``. Everything is checked
against known sha256 sums; a part that fails is downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from uvav.errors import PrepareError
from uvav.outputs import file_sha256

RECORDINGS = "fsdd/recordings"
MNIST_IMAGES = "mnist/t10k-images-idx3-ubyte.gz"
MNIST_LABELS = "mnist/t10k-labels-idx1-ubyte.gz"
FSDD_REPO = "Jakobovski/free-spoken-digit-dataset"
FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FSDD_ARCHIVE = f"https://codeload.github.com/{FSDD_REPO}/tar.gz/{FSDD_COMMIT}"
RECORDINGS_SHA256 = "ddb17656a0bca4c5ddace082be188ca630516dc2ef1110afe3c4e9cc71173de4"  # sorted by name
FILE_SHA256 = {
    MNIST_IMAGES: "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
    MNIST_LABELS: "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
}
NUM_RECORDINGS = 3000
_WAV_NAME = re.compile(r"^\d_[A-Za-z]+_\d+\.wav$")


def recordings_sha256(folder: Path) -> tuple[str, int]:
    """sha256 of every ``*.wav`` in ``folder`` concatenated in sorted name order, and their count."""
    h = hashlib.sha256()
    files = sorted(folder.glob("*.wav"), key=lambda p: p.name)
    for path in files:
        h.update(path.read_bytes())
    return h.hexdigest(), len(files)


def check(root: str | Path) -> dict[str, str | None]:
    """Part (``fsdd/recordings`` or an MNIST file) -> its problem, or None when it matches."""
    root = Path(root)
    out: dict[str, str | None] = {}
    rec = root / RECORDINGS
    if not rec.is_dir():
        out[RECORDINGS] = f"{rec}: missing"
    else:
        digest, count = recordings_sha256(rec)
        out[RECORDINGS] = None if digest == RECORDINGS_SHA256 else (
            f"{rec}: sha256 of its {count} recordings (expected {NUM_RECORDINGS}, concatenated in sorted "
            f"name order) is {digest}, expected {RECORDINGS_SHA256}: a recording is missing, extra or "
            "changed")
    for name, want in FILE_SHA256.items():
        path = root / name
        if not path.is_file():
            out[name] = f"{path}: missing"
        else:
            digest = file_sha256(path)
            out[name] = None if digest == want else f"{path}: sha256 {digest}, expected {want}"
    return out


def verify(root: str | Path) -> list[str]:
    """Every problem with the AV-MNIST files under ``root`` (an empty list: all checksums match)."""
    return [p for p in check(root).values() if p is not None]


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Fetch ``url`` into ``dest`` (through a temporary file in the same folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name, suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_fsdd(root: Path) -> None:
    """Download FSDD at the pinned commit and extract ``recordings/*.wav`` (and its README)."""
    archive = root / "fsdd" / f"fsdd-{FSDD_COMMIT[:7]}.tar.gz"
    print(f"downloading {FSDD_ARCHIVE}", file=sys.stderr)
    download(FSDD_ARCHIVE, archive)
    rec = root / RECORDINGS
    staging = rec.with_name("recordings.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 2:
                continue
            if len(parts) == 3 and parts[1] == "recordings" and _WAV_NAME.match(parts[2]):
                target = staging / parts[2]
            elif len(parts) == 2 and parts[1] == "README.md":
                target = root / "fsdd" / "FSDD_README.md"
            else:
                continue
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    shutil.rmtree(rec, ignore_errors=True)
    staging.rename(rec)
    archive.unlink()


def fetch_mnist_file(root: Path, name: str) -> None:
    """Try each mirror in turn until a download matches its checksum."""
    errors = []
    for mirror in MNIST_MIRRORS:
        url = mirror + Path(name).name
        tmp = root / f"{name}.download"
        try:
            print(f"downloading {url}", file=sys.stderr)
            download(url, tmp)
            digest = file_sha256(tmp)
            if digest != FILE_SHA256[name]:
                raise ValueError(f"sha256 {digest}, expected {FILE_SHA256[name]}")
            os.replace(tmp, root / name)
            return
        except Exception as exc:  # noqa: BLE001 - try the next mirror
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: {exc}")
    raise RuntimeError(f"could not download {name}: " + "; ".join(errors))


def prepare_av_mnist(root: str | Path, force: bool = False) -> list[str]:
    """Download what is missing or wrong under ``root``; returns the problems left (empty: ready)."""
    root = Path(root)
    for part, problem in check(root).items():
        if problem is None and not force:
            continue
        if part == RECORDINGS:
            fetch_fsdd(root)
        else:
            fetch_mnist_file(root, part)
    return verify(root)


def prepare(root: str | Path, verify_only: bool, force: bool) -> list[str]:
    """The dataset entry's ``prepare``: the problems left under ``root`` after verifying (and unless
    ``verify_only``, fetching what fails). A failed download raises :class:`PrepareError` saying how to fetch the
    files by hand."""
    if verify_only:
        return verify(root)
    try:
        return prepare_av_mnist(root, force)
    except (OSError, RuntimeError, tarfile.TarError) as exc:
        raise PrepareError(
            f"download failed: {exc}\nFetch the files by hand, then run with --verify-only:\n"
            f"  {FSDD_ARCHIVE} (its recordings/*.wav) -> {root}/{RECORDINGS}/\n"
            f"  {MNIST_MIRRORS[0]}t10k-{{images-idx3,labels-idx1}}-ubyte.gz (or another mirror) -> {root}/mnist/"
        ) from exc
