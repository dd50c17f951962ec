"""CAV-MAE's published datafile format: a JSON list of clips per split and a label CSV.

Datafile: ``{"data": [{"video_id": "abc", "wav": "/x/abc.wav", "video_path": "/x/frames", "labels": "/m/09x0r"}]}``
(``labels`` is a comma-separated string of label ids, ``mid``\\ s). Label CSV: header ``index,mid,display_name``;
the class order is ``index`` and the class names are ``display_name``. Frames are pre-extracted to
``<video_path>/frame_<i>/<video_id>.jpg`` for ``i`` in ``0 .. num_frames-1`` (CAV-MAE extracts 10). One frame per
clip is stored and used for every split: ``frame=middle`` (``num_frames // 2``, the frame CAV-MAE evaluates on)
or a fixed index. CAV-MAE's random training frame is not offered: it would need every frame in the store.
Relative ``wav`` / ``video_path`` are resolved against the JSON file's folder.

Single-label only (VGGSound-style): an entry with several labels, an unknown label or a missing file raises an
error naming it, or is skipped and listed in ``info["skipped_files"]`` with ``on_bad_file=skip``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf.errors import MissingMandatoryValue

from uvav.config import DataConfig
from uvav.data import DATASETS, Dataset
from uvav.data.base import AVData, stratified_split
from uvav.data.features import (
    bad_file,
    check_decoded_settings,
    decode_files,
    feature_settings,
    resolve_cache_dir,
)
from uvav.data.store import StoreSpec, store_avdata
from uvav.data.store_build import build_store

LAYOUT = ("datafiles {\"data\": [{\"video_id\", \"wav\", \"video_path\", \"labels\"}]}, audio at <wav>, frames at "
          "<video_path>/frame_<i>/<video_id>.jpg for i in 0..num_frames-1, a label CSV with header "
          "index,mid,display_name")


class Entry(NamedTuple):
    audio: Path
    image: Path
    label: int
    video_id: str


def setting(cfg: Any, key: str) -> Any:
    """``cfg[key]``; an unset mandatory path raises FileNotFoundError showing the expected layout."""
    try:
        value = cfg[key]
    except MissingMandatoryValue:
        value = None
    if value in (None, "", "???"):
        raise FileNotFoundError(f"data.{key} is not set. Expected: {LAYOUT}")
    return value


def frame_index(frame: Any, num_frames: int) -> int:
    """``middle`` -> ``num_frames // 2``; an integer (or its string) -> that index, checked."""
    if num_frames < 1:
        raise ValueError(f"data.num_frames={num_frames}: at least 1")
    if str(frame) == "middle":
        return num_frames // 2
    try:
        index = int(str(frame))
    except ValueError:
        raise ValueError(f"data.frame={frame!r}: 'middle' or a frame index 0..{num_frames - 1}") from None
    if not 0 <= index < num_frames:
        raise ValueError(f"data.frame={index}: a frame index 0..{num_frames - 1} (data.num_frames={num_frames})")
    return index


def read_label_csv(path: str | Path) -> tuple[list[str], dict[str, int]]:
    """Class names in ``index`` order and ``mid -> index``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label CSV {path} not found. Expected: {LAYOUT}")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"index", "mid", "display_name"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: header {reader.fieldnames}, expected index,mid,display_name")
        rows = sorted((int(r["index"]), r["mid"].strip(), r["display_name"].strip()) for r in reader)
    if [r[0] for r in rows] != list(range(len(rows))) or not rows:
        raise ValueError(f"{path}: the index column must be 0..K-1, each once")
    mids = {mid: i for i, mid, _ in rows}
    if len(mids) != len(rows):
        raise ValueError(f"{path}: a mid is listed twice")
    return [name for _, _, name in rows], mids


def read_datafile(
    path: str | Path, mids: dict[str, int], frame: int, on_bad_file: str, skipped: list[dict[str, str]]
) -> list[Entry]:
    """The usable entries of one datafile, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datafile {path} not found. Expected: {LAYOUT}")
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: not a CAV-MAE datafile ({{\"data\": [...]}})")
    base, entries = path.resolve().parent, []
    for k, e in enumerate(data["data"]):
        where = f"{path} entry {k}" + (f" (video_id {e.get('video_id')})" if isinstance(e, dict) else "")
        missing = {"video_id", "wav", "video_path", "labels"} - set(e if isinstance(e, dict) else ())
        if missing:
            bad_file(where, f"keys {sorted(missing)} missing. Expected: {LAYOUT}", on_bad_file, skipped)
            continue
        labels = [m.strip() for m in str(e["labels"]).split(",") if m.strip()]
        if len(labels) != 1:
            reason = f"{len(labels)} labels {labels}: cavmae_json is single-label (one mid per clip, VGGSound-style)"
            bad_file(where, reason, on_bad_file, skipped)
            continue
        if labels[0] not in mids:
            bad_file(where, f"label {labels[0]} is not in the label CSV", on_bad_file, skipped)
            continue
        vid = str(e["video_id"])
        audio = base / Path(e["wav"]).expanduser()
        image = base / Path(e["video_path"]).expanduser() / f"frame_{frame}" / f"{vid}.jpg"
        if not audio.is_file():
            bad_file(audio, f"audio of {where} not found. Expected: {LAYOUT}", on_bad_file, skipped)
        elif not image.is_file():
            bad_file(image, f"frame {frame} of {where} not found. Expected: {LAYOUT}", on_bad_file, skipped)
        else:
            entries.append(Entry(audio, image, mids[labels[0]], vid))
    return entries


@dataclass
class CavmaeJsonDataConfig(DataConfig):
    """CAV-MAE's datafiles: JSON ``{"data": [{"video_id", "wav", "video_path", "labels"}]}`` + a label CSV."""

    name: str = "cavmae_json"
    train_json: str | None = None  # required (checked when the data is loaded)
    val_json: str | None = None  # None -> val_fraction of train_json, stratified by class (seeded by seed)
    test_json: str | None = None  # required
    label_csv: str | None = None  # required; header index,mid,display_name; class order = index
    num_frames: int = 10  # frames extracted per clip: <video_path>/frame_<i>/<video_id>.jpg, i < num_frames
    frame: str = "middle"  # middle (num_frames // 2, CAV-MAE's evaluation frame) | a fixed index 0..num_frames-1
    target_length: int = 1024
    image_size: int = 224
    normalize: str = "cavmae"  # cavmae (-5.081 / 4.4849) | train (statistics of the training split)


def load_cavmae_json(cfg: Any, cache_dir: str | Path | None = None) -> AVData:
    """Build a dataset from CAV-MAE datafiles (``cfg``: a ``CavmaeJsonDataConfig`` node)."""
    check_decoded_settings(cfg)
    frame = frame_index(cfg.frame, cfg.num_frames)
    label_csv = setting(cfg, "label_csv")
    class_names, mids = read_label_csv(label_csv)
    files = {"train": setting(cfg, "train_json"), "val": cfg.val_json, "test": setting(cfg, "test_json")}
    skipped: list[dict[str, str]] = []
    entries = {k: read_datafile(f, mids, frame, cfg.on_bad_file, skipped) if f else [] for k, f in files.items()}
    items = entries["train"] + entries["val"] + entries["test"]
    if not entries["train"] or not entries["test"]:
        raise ValueError(f"no usable clips in the {'train' if not entries['train'] else 'test'} datafile "
                         f"({files['train'] if not entries['train'] else files['test']})")
    settings = feature_settings(cfg, dataset="cavmae_json", frame=frame, on_bad_file=cfg.on_bad_file)
    spec = StoreSpec("cavmae_json", partial(decode_files, target_length=cfg.target_length,
                                            num_mel_bins=cfg.num_mel_bins, image_size=cfg.image_size),
                     (cfg.target_length, cfg.num_mel_bins), (3, cfg.image_size, cfg.image_size), cfg.on_bad_file)
    sources = [f for e in items for f in (e.audio, e.image)]
    store = build_store(spec, items, sources, settings, resolve_cache_dir(cache_dir, cfg), cfg.num_workers,
                        cfg.verify_store)
    ok = store.ok
    keep = [i for i in range(len(items)) if ok[i]]
    part_of = ["train"] * len(entries["train"]) + ["val"] * len(entries["val"]) + ["test"] * len(entries["test"])
    labels = torch.tensor([items[i].label for i in keep])
    position = {k: torch.tensor([j for j, i in enumerate(keep) if part_of[i] == k], dtype=torch.long)
                for k in ("train", "val", "test")}
    if position["train"].numel() == 0:
        raise ValueError(f"no readable clips in the train datafile {files['train']}")
    if cfg.val_json:
        parts = position
        split = {"kind": "datafiles", **{f"{k}_json": str(f) for k, f in files.items()}}
    else:
        tr, va = stratified_split(labels[position["train"]], cfg.val_fraction, cfg.seed)
        parts = {"train": position["train"][tr], "val": position["train"][va], "test": position["test"]}
        split = {"kind": "datafiles", "train_json": str(files["train"]), "test_json": str(files["test"]),
                 "val": "stratified from train_json", "val_fraction": cfg.val_fraction, "seed": cfg.seed}
    info = {
        "source": "CAV-MAE datafiles",
        "label_csv": str(label_csv),
        "split": split,
        "frame": {"index": frame, "num_frames": cfg.num_frames, "choice": str(cfg.frame)},
        "skipped_files": skipped + [{"path": s["path"], "reason": s["reason"]} for s in store.skipped],
        "short_audio_padded": [str(items[r].audio) for r in store.short_rows],
        "features": {k: settings[k] for k in ("version", "sample_rate", "target_length", "num_mel_bins",
                                              "image_size", "fbank", "image_resize")},
    }
    names = [f"{items[i].video_id}:{items[i].audio}" for i in keep]
    return store_avdata(store, torch.tensor(keep, dtype=torch.long), labels, parts, class_names, cfg.normalize,
                        info, names)


DATASETS.register(Dataset("cavmae_json", CavmaeJsonDataConfig, load_cavmae_json,
                          path_keys=("train_json", "val_json", "test_json", "label_csv"), order=30))
