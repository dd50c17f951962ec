"""Where backbone weights come from: ``backbone.checkpoint`` is a local path, a URL (``https://``, ``http://``,
``file://``) or the name of one of CAV-MAE's published models (:data:`PUBLISHED`).

Downloads go to one cache folder, ``<torch.hub.get_dir()>/checkpoints`` (``$TORCH_HOME`` moves it), shared by every
project on the machine: a name is saved as ``<name>.pth``, another URL as ``<hash of the URL>-<file name>``. A
download goes to ``<file>.partial`` with a progress bar, resumes a cut-off ``.partial`` with an HTTP Range request,
checks the byte count against Content-Length, and is renamed only when complete; a file lock makes parallel jobs
download once. With ``backbone.checkpoint_sha256`` the file is verified (a mismatch deletes it and names both
hashes). Why not ``torch.hub.download_url_to_file``: it accepts a connection cut before Content-Length as a complete
file (http.client returns b"" instead of raising) and cannot resume.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm.auto import tqdm

from uvav.errors import UserError
from uvav.outputs import file_lock, file_sha256

log = logging.getLogger(__name__)

# CAV-MAE's model zoo (YuanGongND/cav-mae, README "Pretrained Models"); docs/facts.md §2
PUBLISHED: dict[str, str] = {
    "cavmae_scale++": "https://www.dropbox.com/s/l5t5geufdy3qvnv/audio_model.21.pth?dl=1",
    "cavmae_scale+": "https://www.dropbox.com/s/xu8bfie6hz86oev/audio_model.25.pth?dl=1",
    "cavmae_base": "https://www.dropbox.com/s/wxrjgr86gdhc5k8/cav-mae-base.pth?dl=1",
    "cavmae_vggsound_65.5": "https://www.dropbox.com/s/f4wrbxv2unewss9/vgg_65.5.pth?dl=1",  # VGGSound-finetuned
}
CHUNK = 1 << 20


class WeightsError(UserError, RuntimeError):
    """Weights that cannot be found, downloaded or verified; the message says what to do."""


@dataclass
class WeightsSource:
    """Where a run's initial weights came from (recorded in ``metrics.json``)."""

    spec: str  # backbone.checkpoint as given
    kind: str  # name | url | path
    path: str  # the local file read
    url: str | None = None
    sha256: str | None = None  # of the file read

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def cache_folder() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve(spec: str, sha256: str | None = None, folder: Path | None = None, progress: bool = True) -> WeightsSource:
    """The local file for ``backbone.checkpoint`` (downloading a name or URL when needed), verified against
    ``sha256`` when given."""
    folder = folder or cache_folder()
    if spec in PUBLISHED:
        source = WeightsSource(spec, "name", str(folder / f"{spec}.pth"), PUBLISHED[spec])
    elif spec.startswith(("http://", "https://")):
        name = Path(unquote(urlparse(spec).path)).name or "checkpoint.pth"
        key = hashlib.sha256(spec.encode()).hexdigest()[:12]
        source = WeightsSource(spec, "url", str(folder / f"{key}-{name}"), spec)
    else:
        path = _local_path(spec)
        if not path.is_file():
            known = ", ".join(PUBLISHED)
            raise WeightsError(f"backbone.checkpoint={spec}: no such file (a path, an http(s):// or file:// URL, or "
                               f"one of the published names: {known})")
        source = WeightsSource(spec, "path", str(path.resolve()))
    if source.url is not None:
        with file_lock(Path(source.path + ".lock")):
            if not Path(source.path).is_file():
                download(source.url, Path(source.path), progress)
            source.sha256 = _verified(Path(source.path), sha256, delete=True)
    else:
        source.sha256 = _verified(Path(source.path), sha256, delete=False)
    return source


def _local_path(spec: str) -> Path:
    return Path(unquote(urlparse(spec).path) if spec.startswith("file://") else spec).expanduser()


def content_key(spec: str | None) -> dict[str, str]:
    """What a result key adds for ``backbone.checkpoint``: the sha256 of a local file, whose content can change under
    the same path (a pretraining job run again); nothing for no checkpoint, a published name or a URL, which the
    spec itself identifies."""
    if not spec or spec in PUBLISHED or spec.startswith(("http://", "https://")):
        return {}
    path = _local_path(spec)
    return {"checkpoint_content": file_sha256(path)} if path.is_file() else {}


def _verified(path: Path, expected: str | None, delete: bool) -> str:
    digest = file_sha256(path)
    if expected and digest != expected.lower():
        if delete:  # a downloaded copy: removed, so that the next run downloads it again
            path.unlink(missing_ok=True)
        raise WeightsError(f"{path}: sha256 {digest}, expected {expected} (backbone.checkpoint_sha256)"
                           + ("; the downloaded file was deleted" if delete else ""))
    return digest


def download(url: str, dst: Path, progress: bool = True) -> None:
    """``url`` to ``dst`` through ``dst.partial`` (resumed when present), renamed when every byte arrived."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "uvav"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if have and response.status != 206:  # the server ignored the range: start again
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(partial, "ab" if have else "wb") as out, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                    desc=f"download {dst.name}") as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(f"cannot download {url} ({exc}). Without network, fetch it elsewhere and place it at "
                           f"{dst} (or pass backbone.checkpoint=<local path>); a partial download in {partial} is "
                           "resumed by the next run") from exc
    size = partial.stat().st_size
    if total is not None and size != total:
        raise WeightsError(f"download of {url} stopped at {size} of {total} bytes; the next run resumes it from "
                           f"{partial}")
    partial.replace(dst)
    log.info("downloaded %s to %s (%d bytes)", url, dst, size)
