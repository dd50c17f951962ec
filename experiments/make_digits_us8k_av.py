"""Build a dataset in the UrbanSound8K-AV layout from real spoken digits (FSDD) and real handwritten digits (MNIST).

    python experiments/make_digits_us8k_av.py OUT_DIR [--data-root ../shared/data] [--seed 0]

Digit ``d`` is UrbanSound8K class ``d``. The clips are FSDD's official *test* takes (300 recordings, 6 speakers)
and the images come from av_mnist's *test* image pool (``image_pools`` with data.seed=0 and the default
test_image_fraction), each clip with its own image of its digit; so nothing in the set was seen by a model
pretrained on av_mnist's training pairs (``experiments/pretrain_av_mnist.sh``). Writes
``OUT_DIR/Dataset_v3_sound/<class>/<name>.wav`` (the FSDD file, 8 kHz) and ``OUT_DIR/Dataset_v3_vision/<class>/
<name>.jpg`` (the 28 px digit). The files are read from the data folder, never copied into the repository.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from uvav.data.av_mnist import RECORDINGS, find_data_root, image_pools, list_clips, load_mnist
from uvav.data.urbansound8k_av import CLASS_NAMES, SOUND_DIR, VISION_DIR

TEST_IMAGE_FRACTION = 0.3  # av_mnist's default (AVMnistDataConfig.test_image_fraction)


def build(out: Path, data_root: Path, seed: int) -> int:
    clips = [c for c in list_clips(data_root, "error", []) if c.split == "test"]
    images, labels = load_mnist(data_root)
    pool = image_pools(labels, TEST_IMAGE_FRACTION, 0)["test"]
    rng = np.random.default_rng(seed)
    for k, clip in enumerate(clips):
        candidates = pool[labels[pool] == clip.digit]
        image = images[int(rng.choice(candidates))]
        name = f"{100000 + k}-{clip.digit}-0-{clip.take}"
        sound = out / SOUND_DIR / CLASS_NAMES[clip.digit] / f"{name}.wav"
        vision = out / VISION_DIR / CLASS_NAMES[clip.digit] / f"{name}.jpg"
        sound.parent.mkdir(parents=True, exist_ok=True)
        vision.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_root / RECORDINGS / clip.name, sound)
        Image.fromarray(image).convert("RGB").save(vision, quality=95)
    return len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data-root", default=None, help="folder with fsdd/ and mnist/ (default: uvav's search)")
    parser.add_argument("--seed", type=int, default=0, help="which image of its digit each clip gets")
    args = parser.parse_args()
    count = build(args.out, find_data_root(args.data_root), args.seed)
    print(f"{count} clips in the UrbanSound8K-AV layout under {args.out}")


if __name__ == "__main__":
    main()
