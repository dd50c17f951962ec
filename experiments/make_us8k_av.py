"""Generate a dataset in the UrbanSound8K-AV layout, at real clip length, for scale and throughput checks.

    python experiments/make_us8k_av.py OUT_DIR --clips 8732 --seed 0 [--workers N]

Writes ``OUT_DIR/Dataset_v3_sound/<class>/<name>.wav`` (4 s, 16 / 22.05 / 44.1 / 48 kHz, a third stereo,
16-bit PCM), ``OUT_DIR/Dataset_v3_vision/<class>/<name>.jpg`` (320x240) and ``OUT_DIR/UrbanSound8K.csv``
(``slice_file_name, fold, classID``; ten folds) so that ``data.split=folds`` works too. Names follow
UrbanSound8K's ``<fsID>-<classID>-<occurrence>-<slice>``. Each class has its own tones and image colours,
so the data is learnable; the content is not meant to resemble real recordings. Clip ``k`` depends only on
``(seed, k)``, so the output does not depend on ``--workers`` (default: every core).
"""

from __future__ import annotations

import argparse
import csv
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from uvav.data.urbansound8k_av import CLASS_NAMES, SOUND_DIR, VISION_DIR

RATES = (16000, 22050, 44100, 48000)
IMAGE_SIZE = (320, 240)


def clip_name(k: int) -> tuple[str, int]:
    label = k % len(CLASS_NAMES)
    return f"{100000 + k}-{label}-0-{k // len(CLASS_NAMES)}", label


def write_clip(out: Path, k: int, seed: int, seconds: float) -> None:
    """Clip ``k``: one wav (class tones + noise, random rate and channel count) and one JPEG (class colour +
    texture), drawn from a generator seeded by ``(seed, k)``."""
    name, label = clip_name(k)
    rng = np.random.default_rng([seed, k])
    rate = int(rng.choice(RATES))
    t = np.arange(int(rate * seconds)) / rate
    base = 150.0 * (label + 1)
    wave = sum(a * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi)) for h, a in ((1, 0.3), (2, 0.15)))
    wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)) + 0.02 * rng.standard_normal(t.size)
    data = np.stack([wave, 0.7 * wave], axis=1) if rng.random() < 1 / 3 else wave
    cls = CLASS_NAMES[label]
    (out / SOUND_DIR / cls).mkdir(parents=True, exist_ok=True)
    sf.write(str(out / SOUND_DIR / cls / f"{name}.wav"), data.astype(np.float32), rate, subtype="PCM_16")
    w, h = IMAGE_SIZE
    colour = np.array([(label * 70) % 256, (label * 130 + 60) % 256, (label * 40 + 120) % 256], dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 0.6 + 0.4 * np.sin(xx / rng.uniform(8, 40) + yy / rng.uniform(8, 40))[..., None]
    pixels = colour * shade + rng.normal(0, 12, (h, w, 3))
    (out / VISION_DIR / cls).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out / VISION_DIR / cls / f"{name}.jpg", quality=90)


def _write_range(out: Path, start: int, stop: int, seed: int, seconds: float) -> None:
    for k in range(start, stop):
        write_clip(out, k, seed, seconds)


def make_us8k_av(out_dir: str | Path, clips: int, seed: int = 0, seconds: float = 4.0,
                 workers: int | None = None) -> Path:
    """Write ``clips`` audio-image pairs (classes in turn) and the metadata CSV on ``workers`` processes
    (None: every core; 0: this process); returns ``out_dir``."""
    out = Path(out_dir)
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    step = 100
    if workers <= 1:
        _write_range(out, 0, clips, seed, seconds)
    else:
        with ProcessPoolExecutor(workers) as pool:
            jobs = [pool.submit(_write_range, out, a, min(clips, a + step), seed, seconds)
                    for a in range(0, clips, step)]
            for job in jobs:
                job.result()
    rows = []
    for k in range(clips):
        name, label = clip_name(k)
        rows.append((f"{name}.wav", 1 + k % 10, label))
    with open(out / "UrbanSound8K.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("slice_file_name", "fold", "classID"))
        writer.writerows(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--clips", type=int, default=8732)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every core; 0: one)")
    args = parser.parse_args()
    out = make_us8k_av(args.out_dir, args.clips, args.seed, args.seconds, args.workers)
    print(f"{args.clips} clips in {out}")


if __name__ == "__main__":
    main()
