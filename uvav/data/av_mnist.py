"""AV-MNIST-lite: FSDD spoken digits paired with MNIST (test-split) handwritten digits by label.

Audio keeps FSDD's official split (take 0-4 test, 5-49 train). The 10,000 MNIST images are split into
disjoint train/test pools (``test_image_fraction``, ``seed``) and every clip is paired with an image of
its digit from the matching pool; the pairing is written to a CSV manifest and reused from then on.
Difficulty knob in MultiBench's spirit: white noise in the audio (``audio_snr_db``) and PCA-degraded
images (``image_energy_removed``, PCA fitted on the training pool).
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from uvav.config import DataConfig
from uvav.data import DATASETS, Dataset
from uvav.data.av_mnist_sources import (
    FSDD_COMMIT,
    FSDD_REPO,
    MNIST_IMAGES,
    MNIST_LABELS,
    MNIST_MIRRORS,
    RECORDINGS,
    prepare,
)
from uvav.errors import ConfigError, DataFileError, DataPathError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from uvav.data.base import AVData
    from uvav.data.corrupting import SourceCorruption


CLASS_NAMES = [str(d) for d in range(10)]
NUM_TEST_TAKES = 5  # FSDD's official split: takes 0-4 are test
MANIFEST_COLUMNS = ("clip", "label", "split", "image_index")
_CLIP_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


class Clip(NamedTuple):
    name: str
    digit: int
    speaker: str
    take: int

    @property
    def split(self) -> str:
        return "test" if self.take < NUM_TEST_TAKES else "train"


class Item(NamedTuple):
    """What decoding one clip needs: its recording, its (possibly degraded) MNIST image, its noise seed."""

    audio: Path
    pic: np.ndarray  # uint8 [28, 28]
    noise_seed: int


def decode_item(
    item: Item, target_length: int, num_mel_bins: int, snr_db: float | None, image_size: int,
    corruption: SourceCorruption | None = None,
) -> tuple[torch.Tensor, bool, torch.Tensor]:
    """``(fbank [T, F], short, uint8 [3, S, S])`` of one clip (white noise at ``snr_db`` if set), under
    ``corruption`` if given (the image keyed by the recording's name: one MNIST image may serve several clips)."""
    from PIL import Image

    from uvav.data.features import audio_features, decode_at, image_to_uint8

    fb, short = decode_at(item.audio, audio_features, target_length, num_mel_bins, snr_db, item.noise_seed,
                          corruption)
    image = image_to_uint8(Image.fromarray(item.pic), image_size)
    return fb, short, image if corruption is None else corruption.image(image, item.audio.name)


class ManifestError(ValueError):
    """A pairing manifest that does not match the files or settings it is used with."""


# ---------------------------------------------------------------- locating the files
def candidate_roots(root: str | None = None) -> list[Path]:
    """``root``, else ``$UVAV_DATA_ROOT``, else ``../shared/data`` beside the repository and the cwd."""
    if root:
        return [Path(root).expanduser()]
    if os.environ.get("UVAV_DATA_ROOT"):
        return [Path(os.environ["UVAV_DATA_ROOT"]).expanduser()]
    repo = Path(__file__).resolve().parents[2]  # uvav/data/av_mnist.py -> the folder holding the package
    found = [(repo / ".." / "shared" / "data").resolve(), (Path.cwd() / ".." / "shared" / "data").resolve()]
    return list(dict.fromkeys(found))


def has_files(root: Path) -> bool:
    return (root / RECORDINGS).is_dir() and all((root / f).is_file() for f in (MNIST_IMAGES, MNIST_LABELS))


def find_data_root(root: str | None = None) -> Path:
    """The first candidate root holding FSDD and MNIST; otherwise FileNotFoundError saying how to get them."""
    candidates = candidate_roots(root)
    for cand in candidates:
        if has_files(cand):
            return cand
    looked = ", ".join(str(c) for c in candidates)
    raise DataPathError(
        f"data.root: AV-MNIST data not found (looked in: {looked}). Expected under the data root: "
        f"{RECORDINGS}/*.wav, {MNIST_IMAGES}, {MNIST_LABELS}. Sources: FSDD recordings from "
        f"https://github.com/{FSDD_REPO} at commit {FSDD_COMMIT}; MNIST t10k files from a public mirror "
        f"({', '.join(MNIST_MIRRORS)}). Download and verify them with "
        f"`python -m uvav.prepare av_mnist --root DIR`, then set data.root=DIR or $UVAV_DATA_ROOT."
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Parse a gzipped idx file of unsigned bytes (MNIST's format)."""
    import numpy as np

    raw = gzip.open(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataFileError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataFileError(f"{path}: {data.size} values, header says {dims}")
    return data.reshape(dims).copy()  # writable (frombuffer views are read-only)


def load_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST t10k: ``uint8 [N, 28, 28]`` images and ``int64 [N]`` labels."""
    import numpy as np

    images, labels = read_idx(root / MNIST_IMAGES), read_idx(root / MNIST_LABELS).astype(np.int64)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DataFileError(f"MNIST files disagree: images {images.shape}, labels {labels.shape}")
    return images, labels


def list_clips(root: Path, on_bad_file: str, skipped: list[dict[str, str]]) -> list[Clip]:
    """Every ``{digit}_{speaker}_{take}.wav`` in the recordings folder, sorted by name."""
    from uvav.data.features import bad_file

    clips = []
    for path in sorted((root / RECORDINGS).iterdir()):
        if path.name.startswith("."):
            continue
        m = _CLIP_NAME.match(path.name)
        if m is None or not path.is_file():
            bad_file(path, "not a recording named {digit}_{speaker}_{take}.wav", on_bad_file, skipped)
            continue
        clips.append(Clip(path.name, int(m.group(1)), m.group(2), int(m.group(3))))
    if not clips:
        raise DataPathError(f"data.root={root}: no recordings in {root / RECORDINGS}")
    return clips


# ---------------------------------------------------------------- pairing
def image_pools(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Disjoint, per-digit stratified train/test pools of MNIST image indices."""
    import torch

    from uvav.data.base import stratified_split

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.test_image_fraction={test_fraction}: must be in (0, 1)")
    train, test = stratified_split(torch.from_numpy(labels), test_fraction, seed)
    return {"train": train.numpy(), "test": test.numpy()}


def pair_clips(
    clips: list[Clip], labels: np.ndarray, pools: dict[str, np.ndarray], seed: int
) -> dict[str, int]:
    """Clip name -> image index: a seeded permutation of the pool's images of the same digit (distinct
    images while the pool lasts, then reused cyclically)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pairs: dict[str, int] = {}
    for split in ("train", "test"):
        for digit in range(10):
            names = sorted(c.name for c in clips if c.split == split and c.digit == digit)
            pool = pools[split][labels[pools[split]] == digit]
            if names and pool.size == 0:
                raise DataFileError(f"no MNIST image of digit {digit} in the {split} pool")
            order = rng.permutation(pool)
            pairs.update({n: int(order[i % order.size]) for i, n in enumerate(names)})
    return pairs


def write_manifest(path: Path, clips: list[Clip], pairs: dict[str, int]) -> None:
    """Write ``clip,label,split,image_index`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows((c.name, c.digit, c.split, pairs[c.name]) for c in clips)
    os.replace(tmp, path)


def read_manifest(
    path: Path, clips: list[Clip], labels: np.ndarray, pools: dict[str, np.ndarray]
) -> dict[str, int]:
    """Read a manifest and check it against the clips on disk, the MNIST labels and the image pools."""
    def fail(why: str) -> ManifestError:
        return ManifestError(f"pairing manifest {path} does not match: {why}. Delete it to pair afresh "
                             "(or point data.manifest elsewhere).")

    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise fail(f"columns {reader.fieldnames}, expected {list(MANIFEST_COLUMNS)}")
        rows = list(reader)
    by_name = {c.name: c for c in clips}
    listed = [r["clip"] for r in rows]
    if len(set(listed)) != len(listed):
        raise fail("a clip is listed twice")
    missing, extra = sorted(set(listed) - set(by_name)), sorted(set(by_name) - set(listed))
    if missing or extra:
        raise fail(f"clips listed but not on disk: {missing[:5]}; on disk but not listed: {extra[:5]}")
    pool_sets = {k: set(v.tolist()) for k, v in pools.items()}
    pairs = {}
    for r in rows:
        clip, idx = by_name[r["clip"]], int(r["image_index"])
        if int(r["label"]) != clip.digit or r["split"] != clip.split:
            raise fail(f"{clip.name} listed as label {r['label']}, split {r['split']}")
        if not 0 <= idx < labels.size or labels[idx] != clip.digit:
            raise fail(f"{clip.name} paired with image {idx}, which is not a {clip.digit}")
        if idx not in pool_sets[clip.split]:
            raise fail(f"image {idx} of {clip.name} is not in the {clip.split} pool of this seed / "
                       "test_image_fraction (the manifest was made with other settings)")
        pairs[clip.name] = idx
    return pairs


def default_manifest(cache_dir: Path, seed: int, test_fraction: float) -> Path:
    """``<cache_dir>/av_mnist_manifest_seed<seed>.csv``; a non-default ``test_image_fraction`` (other image
    pools) gets its own file, ``..._seed<seed>_test<fraction>.csv``."""
    tag = "" if test_fraction == AVMnistDataConfig.test_image_fraction else f"_test{test_fraction:g}"
    return Path(cache_dir) / f"av_mnist_manifest_seed{seed}{tag}.csv"


def manifest_pairs(
    path: Path, clips: list[Clip], labels: np.ndarray, pools: dict[str, np.ndarray], seed: int
) -> tuple[dict[str, int], bool]:
    """Reuse the manifest at ``path`` (checked) or create it; returns ``(pairs, reused)``."""
    if path.is_file():
        return read_manifest(path, clips, labels, pools), True
    pairs = pair_clips(clips, labels, pools, seed)
    write_manifest(path, clips, pairs)
    return pairs, False


# ---------------------------------------------------------------- difficulty and subsets
def pca_degrade(images: np.ndarray, fit_index: np.ndarray, energy_removed: float) -> tuple[np.ndarray, int]:
    """Reconstruct images from the top principal components (fitted on ``fit_index``) that keep
    ``1 - energy_removed`` of the variance; returns the images and the number of components."""
    import torch

    n = images.shape[0]
    x = torch.from_numpy(images.reshape(n, -1)).double()
    mean = x[torch.from_numpy(fit_index)].mean(0)
    _, s, vh = torch.linalg.svd(x[torch.from_numpy(fit_index)] - mean, full_matrices=False)
    cum = (s**2).cumsum(0) / (s**2).sum()
    k = min(int(torch.searchsorted(cum, torch.tensor(1.0 - energy_removed, dtype=cum.dtype))) + 1, len(s))
    rec = (x - mean) @ vh[:k].T @ vh[:k] + mean
    return rec.round().clamp(0, 255).to(torch.uint8).reshape(images.shape).numpy(), k


def select_clips(clips: list[Clip], per_split: int | None) -> list[Clip]:
    """All clips, or the first ``per_split`` of each split ordered take-major (so digits stay balanced)."""
    if per_split is None:
        return clips
    out = []
    for split in ("train", "test"):
        ordered = sorted((c for c in clips if c.split == split), key=lambda c: (c.take, c.speaker, c.digit))
        out += ordered[:per_split]
    return sorted(out)


# ---------------------------------------------------------------- loader
@dataclass
class AVMnistDataConfig(DataConfig):
    """AV-MNIST-lite: the files, the difficulty, and training augmentation on by default."""

    name: str = "av_mnist"
    root: str | None = None  # folder holding fsdd/ and mnist/; None -> $UVAV_DATA_ROOT or ../shared/data
    freq_mask: int = 24
    time_mask: int = 24
    image_shift: int = 2
    target_length: int = 128
    image_size: int = 32
    test_image_fraction: float = 0.3  # share of the MNIST images reserved for the test pool
    audio_snr_db: float | None = None  # difficulty: mix white noise into every clip at this SNR
    image_energy_removed: float = 0.0  # difficulty: PCA reconstruction removing this share of energy
    manifest: str | None = None  # pairing CSV; None -> <feature cache dir>/av_mnist_manifest_seed<seed>.csv
    normalize: str = "train"  # train (statistics of the training split) | cavmae (-5.081 / 4.4849)
    max_clips_per_split: int | None = None  # tests/debugging: decode only this many train and test clips


def load_av_mnist(cfg: Any, cache_dir: str | Path | None = None) -> AVData:
    """Build AV-MNIST-lite from ``cfg`` (an ``AVMnistDataConfig`` node); features come from the feature store."""
    import torch

    from uvav.data.base import stratified_split
    from uvav.data.corrupting import SourceCorruption, eval_store
    from uvav.data.features import (
        check_decoded_settings,
        clip_seed,
        feature_settings,
        features_info,
        one_torch_thread,
        resolve_cache_dir,
    )
    from uvav.data.store import StoreSpec, store_avdata
    from uvav.data.store_build import build_store

    check_decoded_settings(cfg)
    corruption = SourceCorruption.of(cfg)  # refused before any decoding
    root = find_data_root(cfg.root)
    cache_dir = resolve_cache_dir(cache_dir, cfg)
    skipped: list[dict[str, str]] = []
    clips = list_clips(root, cfg.on_bad_file, skipped)
    images, labels = load_mnist(root)
    pools = image_pools(labels, cfg.test_image_fraction, cfg.seed)
    own_manifest = default_manifest(cache_dir, cfg.seed, cfg.test_image_fraction)
    mpath = Path(cfg.manifest) if cfg.manifest else own_manifest
    if cfg.manifest and not mpath.is_file():  # a path from a config is read, never written (only the cache is)
        raise DataPathError(f"data.manifest={cfg.manifest} does not exist. uvav writes new manifests only "
                                f"under its cache folder ({own_manifest}); omit data.manifest to create one there.")
    pairs, reused = manifest_pairs(mpath, clips, labels, pools, cfg.seed)
    chosen = select_clips(clips, cfg.max_clips_per_split)
    removed = float(cfg.image_energy_removed)
    if not 0.0 <= removed < 1.0:
        raise ConfigError(f"data.image_energy_removed={removed}: must be in [0, 1)")
    snr = None if cfg.audio_snr_db is None else float(cfg.audio_snr_db)
    settings = feature_settings(
        cfg, dataset="av_mnist", audio_snr_db=snr, image_energy_removed=removed, seed=cfg.seed,
        test_image_fraction=cfg.test_image_fraction, pairs=[pairs[c.name] for c in chosen],
        on_bad_file=cfg.on_bad_file,
    )
    rec_dir = root / RECORDINGS
    with one_torch_thread():
        pics, components = (images, 0) if removed == 0 else pca_degrade(images, pools["train"], removed)
    items = [Item(rec_dir / c.name, pics[pairs[c.name]], clip_seed(cfg.seed, c.name)) for c in chosen]
    spec = StoreSpec("av_mnist", partial(decode_item, target_length=cfg.target_length, num_mel_bins=cfg.num_mel_bins,
                                         snr_db=snr, image_size=cfg.image_size),
                     (cfg.target_length, cfg.num_mel_bins), (3, cfg.image_size, cfg.image_size), cfg.on_bad_file,
                     audio_dtype=cfg.store_dtype)
    sources = [rec_dir / c.name for c in chosen] + [root / MNIST_IMAGES, root / MNIST_LABELS]
    store = build_store(spec, items, sources, settings, cache_dir, cfg.num_workers, cfg.verify_store)
    keep = [i for i, good in enumerate(store.ok) if good]
    if not keep:
        raise DataFileError(f"no readable recordings in {rec_dir}")
    kept = [chosen[i] for i in keep]
    clip_labels = torch.tensor([c.digit for c in kept])
    is_test = torch.tensor([c.split == "test" for c in kept])
    train_all, test = torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()
    tr, va = stratified_split(clip_labels[train_all], cfg.val_fraction, cfg.seed)
    info = {
        "source": f"AV-MNIST-lite: FSDD ({FSDD_REPO}@{FSDD_COMMIT[:7]}, CC BY-SA 4.0) + MNIST t10k images",
        "root": str(root),
        "split": (f"FSDD official (takes 0-{NUM_TEST_TAKES - 1} test, rest train); val: stratified "
                  f"{cfg.val_fraction} of train, seed {cfg.seed}"),
        "manifest": str(mpath), "manifest_reused": reused,
        "image_pools": {k: int(v.size) for k, v in pools.items()},
        "test_image_fraction": cfg.test_image_fraction,
        "difficulty": {"audio_snr_db": snr, "image_energy_removed": removed, "pca_components": components},
        "subset": cfg.max_clips_per_split,
        "skipped_files": skipped + [{"path": s["path"], "reason": s["reason"]} for s in store.skipped],
        "short_audio_padded": [chosen[r].name for r in store.short_rows],
        "features": features_info(settings),
    }
    parts = {"train": train_all[tr], "val": train_all[va], "test": test}
    rows = torch.tensor(keep, dtype=torch.long)
    return store_avdata(store, rows, clip_labels, parts, CLASS_NAMES, cfg.normalize, info, [c.name for c in kept],
                        corrupted=eval_store(corruption, cfg, spec, items, sources, settings, cache_dir, rows, parts))


DATASETS.register(Dataset("av_mnist", AVMnistDataConfig, load_av_mnist, class_names=tuple(CLASS_NAMES),
                          path_keys=("root", "manifest"), order=10, prepare=prepare))
