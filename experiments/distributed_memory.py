"""Peak held memory of a distributed job against dataset size: the default PL job (cavmae_tiny, 512 fbank frames,
224 px, 1 epoch per stage, batch 8, seed 0) on generated UrbanSound8K-AV-layout data of two sizes, as one process
and as `torchrun --nproc_per_node=2` (gloo, 1 thread per rank). Held = Pss_Anon + Pss_Shmem summed over the
launcher's process tree (both ranks and their workers; uvav.resources.PeakMemory), RSS beside it.

    .venv/bin/python experiments/distributed_memory.py [--sizes 60 300] [--out DIR] [--one-process]
        [--data us8k|multilabel] [OVERRIDES...]

OVERRIDES (e.g. ``method=cpl prompt=input prompt.depth=2``) go to every job after the defaults above.
``--data multilabel``: AudioSet-style multi-label CAV-MAE datafiles instead (experiments/make_multilabel_digits.py,
needs ../shared/data): ``clips`` = train clips, a fifth of that for validation and for test; 3 frames per clip, all
stored (a random one in training, the test predictions averaged over them).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from uvav.resources import PeakMemory

REPO = Path(__file__).resolve().parents[1]


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(out: Path, clips: int, kind: str) -> list[str]:
    """Generate ``clips`` clips of ``kind`` under ``out``; the data overrides that read them."""
    if kind == "us8k":
        root = _recipe("make_us8k_av").make_us8k_av(out, clips, seed=0, seconds=1.0, workers=1)
        return ["data=urbansound8k_av", f"data.root={root}"]
    recipe = _recipe("make_multilabel_digits")
    part = max(1, clips // 5)
    recipe.build(out, recipe.find_data_root(None), {"train": clips, "val": part, "test": part}, 3, 0)
    return ["data=cavmae_json", *(f"data.{s}_json={out / s}.json" for s in ("train", "val", "test")),
            f"data.label_csv={out / 'labels.csv'}", "data.num_frames=3", "data.num_workers=1"]


def peak(work: Path, data: list[str], launcher: list[str], name: str, threads: int, overrides: list[str]) -> dict:
    cmd = [*launcher, "-m", "uvav.run", *data, "backbone=cavmae_tiny",
           "data.target_length=512", "data.image_size=224", "trainer.epochs=1", "method.epochs=1",
           "trainer.batch_size=8", "trainer.eval_batch_size=8", "trainer.progress=false",
           f"trainer.num_threads={threads}", f"paths.cache_dir={work / ('cache_' + name)}",
           f"hydra.run.dir={work / ('run_' + name)}", *overrides]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakMemory(proc.pid, interval=0.1) as meter:
        out, _ = proc.communicate(timeout=1800)
    if proc.returncode:
        raise SystemExit(out[-3000:])
    return meter.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[60, 300])
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here too")
    parser.add_argument("--one-process", action="store_true", help="without the torchrun job")
    parser.add_argument("--data", choices=["us8k", "multilabel"], default="us8k", help="the generated data")
    parser.add_argument("overrides", nargs="*", help="uvav.run overrides for every job")
    args = parser.parse_args()
    python = [sys.executable]
    launchers = {"1 process": (python, 2),
                 "torchrun, 2 processes": ([*python, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node=2"], 1)}
    if args.one_process:
        del launchers["torchrun, 2 processes"]
    rows = ["| job | clips | peak held (Pss_Anon + Pss_Shmem, process tree) | peak RSS (sum) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for clips in args.sizes:
            data = make_data(work / f"data_{clips}", clips, args.data)
            for label, (launcher, threads) in launchers.items():
                summary = peak(work, data, launcher, f"{clips}_{threads}", threads, args.overrides)
                rows.append(f"| {label} | {clips} | {summary['peak_held_bytes'] / 2**20:.0f} MiB | "
                            f"{summary['peak_rss_bytes'] / 2**20:.0f} MiB |")
                print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
