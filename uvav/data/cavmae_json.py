"""CAV-MAE's published datafile format: a JSON list of clips per split and a label CSV.

Datafile: ``{"data": [{"video_id": "abc", "wav": "/x/abc.wav", "video_path": "/x/frames", "labels": "/m/09x0r"}]}``
(``labels`` is a comma-separated string of label ids, ``mid``\\ s: one for VGGSound, several for AudioSet). Label CSV:
header ``index,mid`` (``display_name`` optional: the class names, else the mids); the class order is ``index``.
Relative ``wav`` / ``video_path`` are resolved against the JSON file's folder (CAV-MAE: the working directory), so a
datafile shipped with its media works from anywhere.

Frames are pre-extracted to ``<video_path>/frame_<i>/<video_id>.jpg`` for ``i`` in ``0 .. num_frames-1`` (CAV-MAE
extracts 10). ``frame=random`` (default) stores every one: training reads a random stored frame per sample and
epoch, validation the middle one (``num_frames // 2``), the test split the middle one or the average of the
predictions over all frames (``eval_frames``, CAV-MAE's reported protocol). ``frame=middle`` or an index stores
that frame only and uses it everywhere. A missing frame file falls back, as in CAV-MAE, to the next lower frame
that exists (else the next higher one); each fallback is counted in ``info["frames"]``.

Labels: class indices ``long [N]``, or multi-hot ``float32 [N, K]`` when the data is multi-label
(``multi_label=auto``: some entry carries several mids). An unknown label, a missing audio file or a clip without
any frame raises an error naming it, or is skipped and listed in ``info["skipped_files"]`` with
``on_bad_file=skip``.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from omegaconf.errors import MissingMandatoryValue

from uvav.config import DataConfig
from uvav.data import DATASETS, Dataset
from uvav.errors import ConfigError, DataFileError, DataPathError

if TYPE_CHECKING:
    import torch

    from uvav.data.base import AVData


LAYOUT = ("datafiles {\"data\": [{\"video_id\", \"wav\", \"video_path\", \"labels\"}]}, audio at <wav>, frames at "
          "<video_path>/frame_<i>/<video_id>.jpg for i in 0..num_frames-1, a label CSV with header "
          "index,mid[,display_name]; relative paths are resolved against the JSON file's folder")
MULTI_LABEL = ("auto", "true", "false")


class Entry(NamedTuple):
    audio: Path
    frames: tuple[Path, ...]  # the stored frames' files, after falling back for missing ones
    labels: tuple[int, ...]
    video_id: str


@dataclass
class FrameReport:
    """Frame files that were missing and replaced by another frame of the clip (CAV-MAE's fallback)."""

    fallbacks: int = 0
    clips: int = 0
    examples: list[str] = field(default_factory=list)  # the first few, "<video_id> frame_<i> -> frame_<j>"

    def add(self, missing: list[str]) -> None:
        if missing:
            self.fallbacks, self.clips = self.fallbacks + len(missing), self.clips + 1
            self.examples += missing[: 5 - len(self.examples)]


def setting(cfg: Any, key: str) -> Any:
    """``cfg[key]``; an unset mandatory path raises FileNotFoundError showing the expected layout."""
    try:
        value = cfg[key]
    except MissingMandatoryValue:
        value = None
    if value in (None, "", "???"):
        raise DataPathError(f"data.{key} is not set. Expected: {LAYOUT}")
    return value


def stored_frames(frame: Any, num_frames: int) -> list[int]:
    """The frame indices stored per clip: ``random`` -> all ``num_frames``; ``middle`` -> ``num_frames // 2``;
    an integer (or its string) -> that index, checked."""
    if not 1 <= num_frames:
        raise ConfigError(f"data.num_frames={num_frames}: at least 1 (CAV-MAE extracts 10)")
    if str(frame) == "random":
        return list(range(num_frames))
    if str(frame) == "middle":
        return [num_frames // 2]
    try:
        index = int(str(frame))
    except ValueError:
        raise ConfigError(f"data.frame={frame!r}: 'random', 'middle' or a frame index 0..{num_frames - 1}") from None
    if not 0 <= index < num_frames:
        raise ConfigError(f"data.frame={index}: a frame index 0..{num_frames - 1} (data.num_frames={num_frames})")
    return [index]


def read_label_csv(path: str | Path) -> tuple[list[str], dict[str, int]]:
    """Class names in ``index`` order (``display_name``, else the mid) and ``mid -> index``."""
    path = Path(path)
    if not path.is_file():
        raise DataPathError(f"data.label_csv={path}: no such file. Expected: {LAYOUT}")
    try:
        rows = _label_rows(path)
    except (csv.Error, UnicodeDecodeError) as exc:  # a field over csv's limit, bytes that are not UTF-8 ...
        raise DataFileError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc}); "
                            "expected index,mid[,display_name]") from None
    rows.sort()
    if [r[0] for r in rows] != list(range(len(rows))) or not rows:
        raise DataFileError(f"{path}: the index column must be 0..K-1, each once")
    mids = {mid: i for i, mid, _ in rows}
    if len(mids) != len(rows):
        twice = [m for m, n in Counter(r[1] for r in rows).items() if n > 1]
        raise DataFileError(f"{path}: mid(s) {twice} listed twice")
    return [name for _, _, name in rows], mids


def _label_rows(path: Path) -> list[tuple[int, str, str]]:
    """(index, mid, display name) of each row of a label CSV, in file order."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"index", "mid"} <= set(reader.fieldnames or ()):
            raise DataFileError(f"{path}: header {reader.fieldnames}, expected index,mid[,display_name]")
        rows = []
        for line, r in enumerate(reader, start=2):
            try:
                index = int(str(r["index"]).strip())
            except ValueError:
                raise DataFileError(f"{path} line {line}: index {r['index']!r} is not an integer") from None
            if r["mid"] is None:
                raise DataFileError(f"{path} line {line}: no mid column (a row needs index,mid)")
            mid = r["mid"].strip()
            rows.append((index, mid, (r.get("display_name") or "").strip() or mid))
    return rows


def load_datafile(path: Path) -> list[Any]:
    """The ``data`` list of a datafile; malformed JSON names the file, line and column."""
    if not path.is_file():
        raise DataPathError(f"datafile {path} not found (data.train_json/val_json/test_json). Expected: {LAYOUT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); a CAV-MAE "
                         f"datafile is {{\"data\": [...]}}") from None
    except (UnicodeDecodeError, RecursionError) as exc:  # not UTF-8; nested deeper than Python's recursion limit
        raise DataFileError(f"{path}: not a readable JSON datafile ({type(exc).__name__}); a CAV-MAE datafile is "
                         f"{{\"data\": [...]}}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataFileError(f"{path}: not a CAV-MAE datafile ({{\"data\": [...]}})")
    return data["data"]


def mids_of(entry: Any) -> list[str]:
    return [m.strip() for m in str(entry.get("labels", "")).split(",") if m.strip()] if isinstance(entry, dict) else []


def frame_files(folder: Path, vid: str, wanted: list[int], num_frames: int) -> tuple[list[Path], list[str]]:
    """The file of each ``wanted`` frame: itself, else the next lower existing frame, else the next higher
    (CAV-MAE falls back downwards); returns the files and the missing ones' names (empty list: no frame)."""
    exists = [(folder / f"frame_{i}" / f"{vid}.jpg").is_file() for i in range(num_frames)]
    files, missing = [], []
    for i in wanted:
        j = next((k for k in range(i, -1, -1) if exists[k]), None)
        j = next((k for k in range(i, num_frames) if exists[k]), None) if j is None else j
        if j is None:
            return [], []
        if j != i:
            missing.append(f"{vid} frame_{i} -> frame_{j}")
        files.append(folder / f"frame_{j}" / f"{vid}.jpg")
    return files, missing


def read_datafile(path: Path, rows: list[Any], mids: dict[str, int], wanted: list[int], num_frames: int,
                  multi_label: bool, on_bad_file: str, skipped: list[dict[str, str]], report: FrameReport,
                  ) -> list[Entry]:
    """The usable entries of one datafile, in file order."""
    from uvav.data.features import bad_file

    base, entries = path.resolve().parent, []
    for k, e in enumerate(rows):
        where = f"{path} entry {k}" + (f" (video_id {e.get('video_id')})" if isinstance(e, dict) else "")
        missing = {"video_id", "wav", "video_path", "labels"} - set(e if isinstance(e, dict) else ())
        if missing:
            bad_file(where, f"keys {sorted(missing)} missing: {where}. Expected: {LAYOUT}", on_bad_file, skipped)
            continue
        not_text = [k for k in ("wav", "video_path") if not isinstance(e[k], str)]
        if not_text:
            bad_file(where, f"{not_text} must be text (paths): {where}", on_bad_file, skipped)
            continue
        labels = mids_of(e)
        if not labels or (len(labels) > 1 and not multi_label):
            reason = (f"several labels with data.multi_label=false (one mid per clip): {where} has {labels}"
                      if labels else f"no label: {where}")
            bad_file(where, reason, on_bad_file, skipped)
            continue
        unknown = [m for m in labels if m not in mids]
        if unknown:
            bad_file(where, f"label not in the label CSV: {where} has {unknown}", on_bad_file, skipped)
            continue
        vid = str(e["video_id"])
        audio = base / Path(e["wav"]).expanduser()
        folder = base / Path(e["video_path"]).expanduser()
        frames, fell_back = frame_files(folder, vid, wanted, num_frames)
        if not audio.is_file():
            bad_file(audio, f"audio not found: {where}. Expected: {LAYOUT}", on_bad_file, skipped)
        elif not frames:
            bad_file(folder / f"frame_<0..{num_frames - 1}>" / f"{vid}.jpg", f"no frame found: {where}. "
                     f"Expected: {LAYOUT}", on_bad_file, skipped)
        else:
            report.add(fell_back)
            entries.append(Entry(audio, tuple(frames), tuple(mids[m] for m in labels), vid))
    return entries


def resolve_multi_label(choice: Any, rows: list[list[Any]]) -> bool:
    """``data.multi_label``: true / false, or auto = some entry of the datafiles has several mids."""
    from uvav.data.features import check_choice

    choice = str(choice).lower()
    check_choice("data.multi_label", choice, MULTI_LABEL)
    if choice == "auto":
        return any(len(mids_of(e)) > 1 for part in rows for e in part)
    return choice == "true"


def label_tensor(entries: list[Entry], multi_label: bool, num_classes: int) -> torch.Tensor:
    """``long [N]`` class indices, or ``float32 [N, K]`` multi-hot."""
    import torch

    if not multi_label:
        return torch.tensor([e.labels[0] for e in entries], dtype=torch.long)
    out = torch.zeros(len(entries), num_classes)
    for i, e in enumerate(entries):
        out[i, list(e.labels)] = 1.0
    return out


def overlap_warnings(files: dict[str, Any], entries: dict[str, list[Entry]]) -> dict[str, int]:
    """Warn (with the count) when the validation datafile is the test one, or clips (by video_id) of the
    training datafile are also in the validation or test one; returns the counts."""
    found: dict[str, int] = {}
    if files["val"] and Path(files["val"]).resolve() == Path(files["test"]).resolve():
        found["val_is_test"] = len(entries["test"])
        warnings.warn(f"data.val_json is data.test_json ({files['test']}, {len(entries['test'])} clips): the "
                      "model is selected on the test set (CAV-MAE's own recipe does this); its test numbers are "
                      "optimistic. Set another data.val_json or leave it unset (data.val_fraction of train)",
                      stacklevel=3)
    train_ids = {e.video_id for e in entries["train"]}
    for part in ("val", "test"):
        if part == "val" and "val_is_test" in found:
            continue
        shared = len(train_ids & {e.video_id for e in entries[part]})
        if shared:
            found[f"train_{part}_shared"] = shared
            warnings.warn(f"{shared} clip(s) (by video_id) of data.train_json ({files['train']}) are also in "
                          f"data.{part}_json ({files[part]}): {part} scores are not on unseen clips", stacklevel=3)
    return found


def no_clips_message(part: str, file: Any, total: int, skipped: list[dict[str, str]]) -> str:
    """Why a datafile gave no clip: how many entries it had and the commonest reasons they were skipped."""
    reasons = Counter(s["reason"].split(":")[0] for s in skipped)
    top = "; ".join(f"{n} x {r} (e.g. {next(s['path'] for s in skipped if s['reason'].startswith(r))})"
                    for r, n in reasons.most_common(3))
    return f"no usable clips in the {part} datafile {file} ({total} entries{'; skipped: ' + top if top else ''})"


@dataclass
class CavmaeJsonDataConfig(DataConfig):
    """CAV-MAE's datafiles: JSON ``{"data": [{"video_id", "wav", "video_path", "labels"}]}`` + a label CSV."""

    name: str = "cavmae_json"
    train_json: str | None = None  # required (checked when the data is loaded)
    val_json: str | None = None  # None -> val_fraction of train_json (stratified by class when single-label)
    test_json: str | None = None  # required
    label_csv: str | None = None  # required; header index,mid[,display_name]; class order = index
    num_frames: int = 10  # frames extracted per clip: <video_path>/frame_<i>/<video_id>.jpg, i < num_frames
    # random: store every frame, train on a random one per sample and epoch (CAV-MAE) | middle | a fixed index
    # (store that frame only: 1/num_frames of the image bytes)
    frame: str = "random"
    eval_frames: str = "average"  # test split: average (predictions over all stored frames, CAV-MAE) | middle
    multi_label: str = "auto"  # auto (multi-hot if some entry has several mids) | true | false
    target_length: int = 1024
    image_size: int = 224
    normalize: str = "cavmae"  # cavmae (-5.081 / 4.4849) | train (statistics of the training split)


def load_cavmae_json(cfg: Any, cache_dir: str | Path | None = None) -> AVData:
    """Build a dataset from CAV-MAE datafiles (``cfg``: a ``CavmaeJsonDataConfig`` node)."""
    import torch

    from uvav.data.base import stratified_split
    from uvav.data.corrupting import SourceCorruption, eval_store
    from uvav.data.features import (
        check_choice,
        check_decoded_settings,
        decode_files,
        feature_settings,
        features_info,
        resolve_cache_dir,
    )
    from uvav.data.store import EVAL_FRAMES, StoreSpec, store_avdata
    from uvav.data.store_build import build_store

    check_decoded_settings(cfg)
    corruption = SourceCorruption.of(cfg)  # refused before any decoding
    check_choice("data.eval_frames", cfg.eval_frames, EVAL_FRAMES)
    wanted = stored_frames(cfg.frame, cfg.num_frames)
    label_csv = setting(cfg, "label_csv")
    class_names, mids = read_label_csv(label_csv)
    files = {"train": setting(cfg, "train_json"), "val": cfg.val_json, "test": setting(cfg, "test_json")}
    rows = {k: load_datafile(Path(f)) if f else [] for k, f in files.items()}
    multi_label = resolve_multi_label(cfg.multi_label, list(rows.values()))
    skipped: list[dict[str, str]] = []
    report, entries = FrameReport(), {}
    for part, file in files.items():
        start = len(skipped)
        entries[part] = read_datafile(Path(file), rows[part], mids, wanted, cfg.num_frames, multi_label,
                                      cfg.on_bad_file, skipped, report) if file else []
        if file and not entries[part] and part != "val":
            raise DataFileError(no_clips_message(part, file, len(rows[part]), skipped[start:]))
    overlaps = overlap_warnings(files, entries)
    if report.fallbacks:
        warnings.warn(f"{report.fallbacks} frame file(s) of {report.clips} clip(s) missing, replaced by the next "
                      f"lower frame as CAV-MAE does (e.g. {report.examples[0]}); see data_info.frames",
                      stacklevel=2)
    items = entries["train"] + entries["val"] + entries["test"]
    settings = feature_settings(cfg, dataset="cavmae_json", frames=wanted, on_bad_file=cfg.on_bad_file)
    spec = StoreSpec("cavmae_json", partial(decode_files, target_length=cfg.target_length,
                                            num_mel_bins=cfg.num_mel_bins, image_size=cfg.image_size),
                     (cfg.target_length, cfg.num_mel_bins), (3, cfg.image_size, cfg.image_size), cfg.on_bad_file,
                     frames=len(wanted), audio_dtype=cfg.store_dtype)
    sources = [e.audio for e in items] + sorted({f for e in items for f in e.frames})
    store = build_store(spec, items, sources, settings, resolve_cache_dir(cache_dir, cfg), cfg.num_workers,
                        cfg.verify_store)
    ok = store.ok
    keep = [i for i in range(len(items)) if ok[i]]
    part_of = ["train"] * len(entries["train"]) + ["val"] * len(entries["val"]) + ["test"] * len(entries["test"])
    labels = label_tensor([items[i] for i in keep], multi_label, len(class_names))
    position = {k: torch.tensor([j for j, i in enumerate(keep) if part_of[i] == k], dtype=torch.long)
                for k in ("train", "val", "test")}
    if position["train"].numel() == 0:
        raise DataFileError(f"no readable clips in the train datafile {files['train']} (every one failed to decode: "
                         "see data_info.skipped_files)")
    if cfg.val_json:
        parts = position
        split = {"kind": "datafiles", **{f"{k}_json": str(f) for k, f in files.items()}}
    else:
        tr, va = (random_split if multi_label else stratified_split)(labels[position["train"]], cfg.val_fraction,
                                                                     cfg.seed)
        parts = {"train": position["train"][tr], "val": position["train"][va], "test": position["test"]}
        split = {"kind": "datafiles", "train_json": str(files["train"]), "test_json": str(files["test"]),
                 "val": f"{'random' if multi_label else 'stratified'} from train_json",
                 "val_fraction": cfg.val_fraction, "seed": cfg.seed}
    info = {
        "source": "CAV-MAE datafiles",
        "label_csv": str(label_csv),
        "multi_label": multi_label,
        "split": {**split, **({"overlaps": overlaps} if overlaps else {})},
        "frame": {"choice": str(cfg.frame), "num_frames": cfg.num_frames, "stored": wanted,
                  "fallbacks": report.fallbacks, "clips_with_fallback": report.clips,
                  "fallback_examples": report.examples},
        "skipped_files": skipped + [{"path": s["path"], "reason": s["reason"]} for s in store.skipped],
        "short_audio_padded": [str(items[r].audio) for r in store.short_rows],
        "features": features_info(settings),
    }
    names = [f"{items[i].video_id}:{items[i].audio}" for i in keep]
    rows = torch.tensor(keep, dtype=torch.long)
    return store_avdata(store, rows, labels, parts, class_names, cfg.normalize, info, names, cfg.eval_frames,
                        corrupted=eval_store(corruption, cfg, spec, items, sources, settings,
                                             resolve_cache_dir(cache_dir, cfg), rows, parts))


def random_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-label data has no class to stratify by: about ``fraction`` of the clips at random (seeded)."""
    import torch

    n = labels.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, int(round(fraction * n))) if n > 1 else 0
    return torch.sort(order[held:]).values, torch.sort(order[:held]).values


DATASETS.register(Dataset("cavmae_json", CavmaeJsonDataConfig, load_cavmae_json,
                          path_keys=("train_json", "val_json", "test_json", "label_csv"), order=30))
