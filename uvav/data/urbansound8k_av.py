"""UrbanSound8K-AV (docs/facts.md §4): UrbanSound8K clips paired with one image each, ten classes.

Layout ``<root>/Dataset_v3_sound/<class>/<name>.wav`` + ``<root>/Dataset_v3_vision/<class>/<name>.jpg``
(``.jpeg`` / ``.png`` too). Split ``stratified`` (per class, seeded) or ``folds`` (UrbanSound8K's folds
from its metadata CSV). Unpaired, misplaced or unreadable files raise an error naming them, or are skipped
and listed in ``info["skipped_files"]`` with ``on_bad_file=skip``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from omegaconf import MISSING
from omegaconf.errors import MissingMandatoryValue

from uvav.config import DataConfig
from uvav.data import DATASETS, Dataset
from uvav.errors import ConfigError, DataFileError, DataPathError

if TYPE_CHECKING:
    import torch

    from uvav.data.base import AVData


CLASS_NAMES = [
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
]
SOUND_DIR, VISION_DIR = "Dataset_v3_sound", "Dataset_v3_vision"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
SPLITS = ("stratified", "folds")
LAYOUT = (
    f"<root>/{SOUND_DIR}/<class>/<name>.wav and <root>/{VISION_DIR}/<class>/<name>.jpg (or .jpeg/.png), "
    f"<class> one of {', '.join(CLASS_NAMES)}. The data is distributed on Kaggle as "
    "lingyueguo/urbansound8k-av; set data.root to the folder holding both"
)


class Pair(NamedTuple):
    audio: Path
    image: Path
    label: int


def find_root(cfg: Any) -> Path:
    """``cfg.root`` if it holds both folders; otherwise FileNotFoundError showing the expected layout."""
    try:
        root = cfg.root
    except MissingMandatoryValue:
        root = None
    if not root or root == "???":
        raise DataPathError(f"data.root is not set. Expected layout: {LAYOUT}")
    root = Path(root).expanduser()
    for sub in (SOUND_DIR, VISION_DIR):
        if not (root / sub).is_dir():
            raise DataPathError(f"data.root={root}: {root / sub} not found. Expected layout: {LAYOUT}")
    return root


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def list_pairs(root: Path, on_bad_file: str, skipped: list[dict[str, str]]) -> list[Pair]:
    """Every (wav, image) pair with the same class folder and stem, sorted by class then name."""
    from uvav.data.features import bad_file

    for top in (root / SOUND_DIR, root / VISION_DIR):
        for entry in _files(top):
            if not entry.is_dir():
                bad_file(entry, "not a class folder", on_bad_file, skipped)
            elif entry.name not in CLASS_NAMES:
                reason = f"unknown class folder (classes: {', '.join(CLASS_NAMES)})"
                bad_file(entry, reason, on_bad_file, skipped)
    pairs = []
    for label, cls in enumerate(CLASS_NAMES):
        audio: dict[str, Path] = {}
        images: dict[str, Path] = {}
        for folder, wanted, found in ((root / SOUND_DIR / cls, (".wav",), audio),
                                      (root / VISION_DIR / cls, IMAGE_EXTS, images)):
            files = _files(folder) if folder.is_dir() else []
            if not files:
                reason = "empty class folder" if folder.is_dir() else "missing class folder"
                bad_file(folder, reason, on_bad_file, skipped)
            for f in files:
                if f.suffix.lower() not in wanted or not f.is_file():
                    bad_file(f, f"not a {'/'.join(wanted)} file", on_bad_file, skipped)
                elif f.stem in found:
                    bad_file(f, f"second file for {f.stem} (also {found[f.stem].name})", on_bad_file, skipped)
                else:
                    found[f.stem] = f
        for stem in sorted(audio.keys() | images.keys()):
            if stem not in images:
                where = root / VISION_DIR / cls / f"{stem}.jpg"
                bad_file(audio[stem], f"audio without its image (expected {where})", on_bad_file, skipped)
            elif stem not in audio:
                where = root / SOUND_DIR / cls / f"{stem}.wav"
                bad_file(images[stem], f"image without its audio (expected {where})", on_bad_file, skipped)
            else:
                pairs.append(Pair(audio[stem], images[stem], label))
    if not pairs:
        raise DataPathError(f"data.root={root}: no audio-image pairs under {root}. Expected layout: {LAYOUT}")
    return pairs


def split_stratified(labels: torch.Tensor, cfg: Any) -> dict[str, torch.Tensor]:
    """Per class: ``test_fraction`` to test, then ``val_fraction`` of the rest to validation (seeded)."""
    from uvav.data.base import stratified_split

    if not 0.0 < cfg.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction={cfg.test_fraction}: must be in (0, 1)")
    rest, test = stratified_split(labels, cfg.test_fraction, cfg.seed)
    tr, va = stratified_split(labels[rest], cfg.val_fraction, cfg.seed)
    return {"train": rest[tr], "val": rest[va], "test": test}


def read_metadata_csv(path: str | Path) -> dict[str, tuple[int, int]]:
    """UrbanSound8K's metadata CSV: file stem -> (fold, classID). Raises ``ValueError`` naming the file when it
    cannot be parsed, lacks a column or holds a fold or classID that is not an integer."""
    import pandas as pd

    need = {"slice_file_name", "fold", "classID"}
    try:
        meta = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{path}: not a readable metadata CSV ({type(exc).__name__}: {exc})") from None
    if not need <= set(meta.columns):
        raise DataFileError(f"{path}: columns {sorted(need - set(meta.columns))} missing")
    rows = {}
    for line, (name, fold, label) in enumerate(zip(meta["slice_file_name"], meta["fold"], meta["classID"],
                                                   strict=True), start=2):
        try:
            rows[Path(name).stem] = (int(fold), int(label))
        except ValueError:
            raise DataFileError(f"{path} line {line}: fold {fold!r} and classID {label!r} must be integers") from None
    return rows


def split_folds(
    files: list[str], labels: torch.Tensor, cfg: Any, skipped: list[dict[str, str]]
) -> dict[str, torch.Tensor]:
    """UrbanSound8K folds from ``cfg.metadata_csv`` (matched by file stem): ``test_folds`` are test,
    validation is carved (stratified) from the other folds. Files missing from the CSV are bad files."""
    import torch

    from uvav.data.base import stratified_split
    from uvav.data.features import bad_file

    if not cfg.metadata_csv:
        raise ConfigError("data.split=folds needs data.metadata_csv (UrbanSound8K.csv)")
    rows = read_metadata_csv(cfg.metadata_csv)
    test_folds = {int(f) for f in cfg.test_folds}
    keep, is_test = [], []
    for i, (name, label) in enumerate(zip(files, labels.tolist(), strict=True)):
        row = rows.get(Path(name).stem)
        if row is None:
            bad_file(name, f"not listed in {cfg.metadata_csv}", cfg.on_bad_file, skipped)
        elif row[1] != label:
            bad_file(name, f"class folder {CLASS_NAMES[label]} but classID {row[1]} in the metadata",
                     cfg.on_bad_file, skipped)
        else:
            keep.append(i)
            is_test.append(row[0] in test_folds)
    keep_t, test_mask = torch.tensor(keep, dtype=torch.long), torch.tensor(is_test, dtype=torch.bool)
    rest, test = keep_t[~test_mask], keep_t[test_mask]
    if test.numel() == 0 or rest.numel() == 0:
        raise ConfigError(f"data.test_folds={sorted(test_folds)} leaves {test.numel()} test / "
                         f"{rest.numel()} train clips")
    tr, va = stratified_split(labels[rest], cfg.val_fraction, cfg.seed)
    return {"train": rest[tr], "val": rest[va], "test": test}


@dataclass
class UrbanSound8KAVDataConfig(DataConfig):
    name: str = "urbansound8k_av"
    root: str = MISSING  # folder with Dataset_v3_sound/<class>/*.wav and Dataset_v3_vision/<class>/*.jpg
    target_length: int = 400
    image_size: int = 224
    split: str = "stratified"  # stratified (per class, seeded by seed) | folds (UrbanSound8K's folds)
    test_fraction: float = 0.3  # split=stratified: share of each class held out for test
    metadata_csv: str | None = None  # UrbanSound8K.csv (slice_file_name, fold, classID) for split=folds
    test_folds: list[int] = field(default_factory=lambda: [10])  # split=folds: these folds are the test set
    normalize: str = "train"  # train (statistics of the training split) | cavmae (-5.081 / 4.4849)


def load_urbansound8k_av(cfg: Any, cache_dir: str | Path | None = None) -> AVData:
    """Build UrbanSound8K-AV from ``cfg`` (an ``UrbanSound8KAVDataConfig`` node)."""
    import torch

    from uvav.data.corrupting import SourceCorruption, eval_store
    from uvav.data.features import (
        check_choice,
        check_decoded_settings,
        decode_files,
        feature_settings,
        features_info,
        resolve_cache_dir,
    )
    from uvav.data.store import StoreSpec, store_avdata
    from uvav.data.store_build import build_store

    check_choice("data.split", cfg.split, SPLITS)
    check_decoded_settings(cfg)
    corruption = SourceCorruption.of(cfg)  # refused before any decoding
    root = find_root(cfg)
    cache_dir = resolve_cache_dir(cache_dir, cfg)
    skipped: list[dict[str, str]] = []
    pairs = list_pairs(root, cfg.on_bad_file, skipped)
    settings = feature_settings(cfg, dataset="urbansound8k_av", on_bad_file=cfg.on_bad_file)
    spec = StoreSpec("urbansound8k_av", partial(decode_files, target_length=cfg.target_length,
                                                num_mel_bins=cfg.num_mel_bins, image_size=cfg.image_size),
                     (cfg.target_length, cfg.num_mel_bins), (3, cfg.image_size, cfg.image_size), cfg.on_bad_file,
                     audio_dtype=cfg.store_dtype)
    sources = [f for p in pairs for f in (p.audio, p.image)]
    store = build_store(spec, pairs, sources, settings, cache_dir, cfg.num_workers, cfg.verify_store)
    skipped += [{"path": s["path"], "reason": s["reason"]} for s in store.skipped]
    keep = [i for i, good in enumerate(store.ok) if good]
    if not keep:
        raise DataFileError(f"data.root={root}: no readable audio-image pairs (see data.on_bad_file)")
    rows = torch.tensor(keep, dtype=torch.long)
    labels = torch.tensor([pairs[i].label for i in keep])
    names = [str(pairs[i].audio.relative_to(root)) for i in keep]
    if cfg.split == "stratified":
        parts = split_stratified(labels, cfg)
        split = {"kind": "stratified", "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction,
                 "seed": cfg.seed}
    else:
        parts = split_folds([str(pairs[i].audio) for i in keep], labels, cfg, skipped)
        split = {"kind": "folds", "metadata_csv": str(cfg.metadata_csv), "test_folds": list(cfg.test_folds),
                 "val_fraction": cfg.val_fraction, "seed": cfg.seed}
    info = {
        "source": "UrbanSound8K-AV (Kaggle lingyueguo/urbansound8k-av)",
        "root": str(root),
        "split": split,
        "skipped_files": skipped,
        "short_audio_padded": [str(pairs[r].audio) for r in store.short_rows],
        "features": features_info(settings),
    }
    return store_avdata(store, rows, labels, parts, CLASS_NAMES, cfg.normalize, info, names,
                        corrupted=eval_store(corruption, cfg, spec, pairs, sources, settings, cache_dir, rows, parts))


DATASETS.register(Dataset("urbansound8k_av", UrbanSound8KAVDataConfig, load_urbansound8k_av,
                          class_names=tuple(CLASS_NAMES), path_keys=("root", "metadata_csv"), order=20))
