"""Resource benchmark: FT vs PL (input prompts, attention prompts, attention prompts + cached features).

One process, one backbone, the same data and batch size for every method. Each method trains for
``--epochs`` epochs on the same training split; we report the median epoch time over the epochs after the
first and the peak training memory, both measured by ``uvav.resources`` (the code every job uses), with each
figure's ratio to FT. Weights start from the same random initialisation: time and memory do not depend on
their values, and this keeps the benchmark independent of a fine-tuned checkpoint.

    python experiments/resource_benchmark.py --backbone cavmae_tiny --out results/resources/cpu_tiny
    python experiments/resource_benchmark.py --backbone cavmae_small --out results/resources/cpu_small

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from uvav.cases import CASES
from uvav.checks import register_configs
from uvav.config import NoiseConfig, config_dir
from uvav.data import load_data
from uvav.models.classifier import AVClassifier, count_parameters
from uvav.models.prompts import PromptBank
from uvav.outputs import atomic_write_bytes, atomic_write_json, environment
from uvav.pipeline import Context
from uvav.runtime import autocast_for, select_device
from uvav.train import Feed, Stage, fit, freeze_for_prompts

VARIANTS = [  # name, prompt kind, cached views
    ("FT", None, 0),
    ("PL input-level", "input", 0),
    ("PL attention-level", "attention", 0),
    ("PL attention-level, cached features", "attention", 4),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="cavmae_tiny")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile every transformer block")
    parser.add_argument("--profile", action="store_true",
                        help="rerun the last variant under torch.profiler and write <out>.profile.txt")
    parser.add_argument("--only", nargs="*", default=None, help="subset of variant names")
    parser.add_argument("--out", required=True, help="output path without suffix")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. data.num_train=512")
    return parser.parse_args()


def compose_cfg(args: argparse.Namespace):
    register_configs()
    overrides = [f"backbone={args.backbone}", f"data={args.data}", f"trainer.epochs={args.epochs}",
                 f"trainer.batch_size={args.batch_size}", f"trainer.device={args.device}",
                 f"prompt.length={args.prompt_length}", "trainer.progress=false", *args.overrides]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_variant(name, kind, views, base: AVClassifier, feed: Feed, cfg, device, autocast) -> dict:
    if kind is None:
        model = copy.deepcopy(base)
        stage = Stage(name=name, model=model, train_cases=list(CASES), epochs=cfg.trainer.epochs, lr=cfg.trainer.lr,
                      weight_decay=cfg.trainer.weight_decay)
    else:
        bank = PromptBank(list(CASES), kind, cfg.prompt.length, cfg.backbone.embed_dim,
                          cfg.backbone.fusion_depth).to(device)
        stage = Stage.prompted(name, freeze_for_prompts(base, True), bank, list(CASES), train_mode="oracle",
                               epochs=cfg.trainer.epochs, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay,
                               cache_views=views, eval_modes=("uncertain",), shares_encodings=kind == "attention")
    started = time.perf_counter()
    result = fit(stage, feed, cfg.trainer, device, seed=0, autocast=autocast)
    return {"name": name, "trainable_params": sum(p.numel() for p in stage.trainable()),
            "wall_s": round(time.perf_counter() - started, 2), **result.resources}


def markdown(rows: list[dict], meta: dict) -> str:
    ft = rows[0]
    lines = [f"# Resource benchmark: {meta['backbone']} on {meta['data']} ({meta['device_name']})", "",
             f"Command: `{meta['command']}`", "",
             "| method | time / epoch (s) | × FT | peak training memory (MiB) | × FT | trainable params |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        t, m = row["time_per_epoch_s"], row["peak_train_memory_bytes"]
        t_ratio = f"{t / ft['time_per_epoch_s']:.3f}" if t and ft["time_per_epoch_s"] else "-"
        m_ratio = f"{m / ft['peak_train_memory_bytes']:.3f}" if m and ft["peak_train_memory_bytes"] else "-"
        mib = f"{m / 2**20:.1f}" if m else "-"
        lines.append(f"| {row['name']} | {t:.3f} | {t_ratio} | {mib} | {m_ratio} | {row['trainable_params']:,} |")
    cached = rows[-1].get("cached_features")
    lines += ["", f"- Time: {ft['time_method']}; epochs: {meta['epochs']}, batch size {meta['batch_size']}, "
              f"{meta['train_samples']} training samples per epoch for every method.",
              f"- Memory: {ft['memory_method']}.",
              f"- Cached features (not in the epoch times): {cached}." if cached else "",
              f"- Device: {meta['device']} ({meta['device_name']}), threads {meta['threads']}; "
              f"versions {meta['versions']}; git {meta['git']}; {meta['date']}.", ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cfg = compose_cfg(args)
    device = select_device(cfg.trainer.device)
    autocast = autocast_for(device, cfg.trainer.precision) if device.type == "cuda" else contextlib.nullcontext
    data = load_data(cfg.data, str(Path(cfg.paths.cache_dir) / "features"))
    torch.manual_seed(0)
    base = AVClassifier.from_config(cfg.backbone, cfg.data, data.num_classes).to(device)
    if args.compile:
        base.compile_blocks()
    work = tempfile.TemporaryDirectory(prefix="uvav-bench-")  # file-backed token caches, when not on the GPU
    ctx = Context(cfg, data, NoiseConfig.of(cfg.noise), device, autocast, Path(work.name), Path(work.name))
    feed = ctx.feed()  # the jobs' own data path: DataLoader workers, per-sample corruption
    rows = []
    for name, kind, views in VARIANTS:
        if args.only and name not in args.only:
            continue
        rows.append(run_variant(name, kind, views, base, feed, cfg, device, autocast))
        print(json.dumps(rows[-1]), flush=True)
    if args.profile:
        name, kind, views = VARIANTS[-1]
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            run_variant(name, kind, views, base, feed, cfg, device, autocast)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=25)
        atomic_write_bytes(Path(args.out).with_suffix(".profile.txt"),
                           f"# torch.profiler of '{name}' (cache build, training, validation)\n{table}\n".encode())
    env = environment(device)
    meta = {
        "backbone": args.backbone, "data": args.data, "epochs": args.epochs, "batch_size": args.batch_size,
        "train_samples": len(data.train), "device": str(device), "device_name": env["device_name"],
        "threads": torch.get_num_threads(), "versions": env["versions"], "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "git": _git_commit(), "host": platform.node(),
        "total_params": count_parameters(base), "config": OmegaConf.to_container(cfg.backbone),
    }
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"meta": meta, "rows": rows})
    atomic_write_bytes(out.with_suffix(".md"), markdown(rows, meta).encode())
    print(markdown(rows, meta))


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
