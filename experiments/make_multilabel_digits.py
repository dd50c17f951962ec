"""Build an AudioSet-style multi-label set in CAV-MAE's datafile layout from spoken (FSDD) and written (MNIST) digits.

    python experiments/make_multilabel_digits.py OUT_DIR [--data-root ../shared/data] [--train 1200] [--val 300]
        [--test 300] [--frames 3] [--seed 0]

Each clip pairs a spoken digit with a written digit drawn independently of it, and is labelled with both: class
``d`` means "digit d is heard or seen" (two labels, or one when both sources agree: about 1 clip in 10), so neither
modality alone gives every label, as in AudioSet. The video has ``--frames`` frames extracted (``frame_0`` ..; the
default 3 is fewer than CAV-MAE's 10), each a different MNIST image of the written digit. Audio: FSDD's official
train takes for train/val (disjoint), its test takes for test; images from av_mnist's train/test image pools
(data.seed=0). Writes, CAV-MAE's way (absolute paths, comma-separated mids)::

    OUT_DIR/audio/<video_id>.wav             the FSDD file (8 kHz mono)
    OUT_DIR/frames/frame_<i>/<video_id>.jpg  28 px RGB JPEGs
    OUT_DIR/{train,val,test}.json            {"data": [{"video_id", "wav", "video_path", "labels"}]}
    OUT_DIR/labels.csv                       index,mid,display_name

The source files are read from the data folder and never written into the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from uvav.data.av_mnist import RECORDINGS, find_data_root, image_pools, list_clips, load_mnist

TEST_IMAGE_FRACTION = 0.3  # av_mnist's default (AVMnistDataConfig.test_image_fraction)
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def mid(digit: int) -> str:
    return f"/t/digit{digit}"


def build(out: Path, data_root: Path, sizes: dict[str, int], frames: int, seed: int) -> dict[str, int]:
    """Write the set; returns the clips per split."""
    rng = np.random.default_rng(seed)
    clips = list_clips(data_root, "error", [])
    train_takes = [c for c in clips if c.split == "train"]
    order = rng.permutation(len(train_takes))
    chosen = {"train": [train_takes[i] for i in order[: sizes["train"]]],
              "val": [train_takes[i] for i in order[sizes["train"]: sizes["train"] + sizes["val"]]],
              "test": [c for c in clips if c.split == "test"][: sizes.get("test")]}
    images, labels = load_mnist(data_root)
    pools = image_pools(labels, TEST_IMAGE_FRACTION, 0)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        (out / "frames" / f"frame_{i}").mkdir(parents=True, exist_ok=True)
    for split, picked in chosen.items():
        pool = pools["test" if split == "test" else "train"]
        entries = []
        for k, clip in enumerate(picked):
            vid = f"{split}{k:05d}"
            written = int(rng.integers(10))
            shown = rng.choice(pool[labels[pool] == written], size=frames, replace=False)
            for i, index in enumerate(shown):
                Image.fromarray(images[int(index)]).convert("RGB").save(
                    out / "frames" / f"frame_{i}" / f"{vid}.jpg", quality=95)
            wav = out / "audio" / f"{vid}.wav"
            shutil.copyfile(data_root / RECORDINGS / clip.name, wav)
            digits = sorted({clip.digit, written})
            entries.append({"video_id": vid, "wav": str(wav.resolve()), "video_path": str((out / "frames").resolve()),
                            "labels": ",".join(mid(d) for d in digits)})
        (out / f"{split}.json").write_text(json.dumps({"data": entries}, indent=1) + "\n")
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows((d, mid(d), NAMES[d]) for d in range(10))
    return {split: len(picked) for split, picked in chosen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data-root", default=None, help="folder with fsdd/ and mnist/ (default: uvav's search)")
    parser.add_argument("--train", type=int, default=1200, help="training clips (FSDD train takes)")
    parser.add_argument("--val", type=int, default=300, help="validation clips (other FSDD train takes)")
    parser.add_argument("--test", type=int, default=300, help="test clips (FSDD test takes, at most 300)")
    parser.add_argument("--frames", type=int, default=3, help="frames extracted per clip (CAV-MAE: 10)")
    parser.add_argument("--seed", type=int, default=0, help="the written digits and their images")
    args = parser.parse_args()
    if args.train + args.val > 2700 or min(args.train, args.val, args.test) < 1 or not 1 <= args.frames <= 10:
        parser.error("--train + --val must be at most 2700 (FSDD's train takes), each >= 1; --frames 1..10")
    sizes = build(args.out, find_data_root(args.data_root), {"train": args.train, "val": args.val, "test": args.test},
                  args.frames, args.seed)
    print(f"clips {sizes} with {args.frames} frames each, CAV-MAE datafiles under {args.out}")


if __name__ == "__main__":
    main()
