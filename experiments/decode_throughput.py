"""Decode throughput of the feature store: build it with 1, 2, ... workers into fresh folders.

    python experiments/decode_throughput.py --clips 300 --workers 1 2
    python experiments/decode_throughput.py --data DIR --workers 1 16   # an existing UrbanSound8K-AV folder

Generates ``--clips`` pairs in the UrbanSound8K-AV layout (``experiments/make_us8k_av.py``) unless ``--data``
is given, then times ``load_data`` for ``data=urbansound8k_av`` at the paper's feature size (1024 fbank frames,
128 mel bins, 224 px) once per worker count, each into an empty cache folder. Prints clips (audio-image pairs)
per second, the speed-up over the first worker count, and the load average before and after (other work on
the machine slows decoding). ``--out FILE`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_us8k_av import make_us8k_av  # noqa: E402

from uvav.data import load_data  # noqa: E402
from uvav.data.urbansound8k_av import UrbanSound8KAVDataConfig  # noqa: E402


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def time_build(root: Path, cache: Path, workers: int, args: argparse.Namespace) -> dict:
    cfg = OmegaConf.structured(UrbanSound8KAVDataConfig(
        root=str(root), cache_dir=str(cache), target_length=args.target_length, num_mel_bins=128,
        image_size=args.image_size, num_workers=workers))
    start = time.perf_counter()
    data = load_data(cfg)
    wall = time.perf_counter() - start
    store = data.info["store"]
    return {"workers": workers, "processes": store["workers"], "clips": store["items"], "wall_s": round(wall, 2),
            "decode_s": store["decode_s"], "clips_per_s": round(store["items"] / store["decode_s"], 1),
            "store_bytes": store["bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", help="an existing UrbanSound8K-AV folder (else one is generated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-length", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uvav-throughput-") as tmp:
        root = Path(args.data) if args.data else make_us8k_av(Path(tmp) / "us8k", args.clips, args.seed)
        before = loadavg()
        runs = [time_build(root, Path(tmp) / f"cache-{w}", w, args) for w in args.workers]
        after = loadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"host {platform.node()}, {cores} cores available; loadavg before {before} | after {after}")
    for run in runs:
        speedup = runs[0]["decode_s"] / run["decode_s"]
        print(f"workers={run['workers']}: {run['clips']} clips in {run['decode_s']:.2f} s decoding "
              f"({run['wall_s']:.2f} s load_data) = {run['clips_per_s']:.1f} clips/s "
              f"({2 * run['clips_per_s']:.1f} files/s), speed-up {speedup:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "loadavg_before": before, "loadavg_after": after,
                                              "cores": cores, "host": platform.node()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
