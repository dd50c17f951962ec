"""Scale benchmark (issue #11): the default PL job on generated UrbanSound8K-AV datasets of N clips.

For each N: generates (once) a dataset in the UrbanSound8K-AV layout with ``experiments/make_us8k_av.py``
(4 s WAVs at mixed sample rates, mono and stereo; JPEGs), measures the feature store's decode throughput for each
``--decode-workers`` count (``load_data`` alone, ``data.num_workers=k``, a fresh cache each time), then runs

    python -m uvav.run data=urbansound8k_av data.root=<data_N> backbone=cavmae_tiny data.target_length=1024
        data.image_size=224 trainer.epochs=1 method.epochs=1 trainer.progress=false
        paths.cache_dir=<work>/cache_N hydra.run.dir=<work>/run_N [--extra overrides]

(method=pl, cached features: the defaults) in a fresh cache under :class:`uvav.resources.PeakMemory`, which samples
the job's whole process tree (DataLoader / decode workers included) every 0.25 s: the peak of Pss_Anon +
Pss_Shmem ("held": memory the kernel cannot drop as file cache) beside the peak of summed RSS.
It reads the job's ``metrics.json`` (epoch times per stage, split sizes, the feature store record) and measures
the store's size on disk.

    python experiments/scale_benchmark.py --clips 1500 6000 --out results/scale
    python experiments/scale_benchmark.py --clips 40 --out /tmp/scale --work /tmp/scale_work \\
        --extra data.target_length=128 data.image_size=32

Writes ``<out>/scale.md`` (tables, the targets with pass/fail), ``<out>/scale.json`` (everything raw) and
``<out>/memory_<N>.csv`` (held and RSS over the job's run). Each N's result is kept in ``<work>/result_<N>.json``
and reused on a rerun with the same settings (``--force`` reruns); datasets in ``<work>/data_<N>`` are reused.
Timings are wall-clock: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from uvav.resources import TREE_MEMORY_METHOD, PeakMemory

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
MIB = 2**20
STAGES = ("ft", "head_only", "pl")
JOB = ["data=urbansound8k_av", "backbone=cavmae_tiny", "data.target_length=1024", "data.image_size=224",
       "trainer.epochs=1", "method.epochs=1", "trainer.progress=false"]
GENERATOR = REPO / "experiments" / "make_us8k_av.py"

# Builds only the feature store (load_data on a fresh cache) and prints its time and record: one line "RESULT {...}".
DECODE = """
import json, sys, time
from pathlib import Path
from hydra import compose, initialize_config_dir
from uvav.config import config_dir
from uvav.checks import register_configs
from uvav.data import load_data
register_configs()
with initialize_config_dir(config_dir(), version_base="1.3"):
    cfg = compose("config", overrides=json.loads(sys.argv[1]))
cache = str(cfg.data.cache_dir or Path(cfg.paths.cache_dir) / "features")
started = time.perf_counter()
data = load_data(cfg.data, cache)
seconds = time.perf_counter() - started
try:
    sizes = dict(data.sizes())
except Exception:
    sizes = {s: len(getattr(data, s)) for s in ("train", "val", "test") if hasattr(data, s)}
print("RESULT " + json.dumps({"seconds": seconds, "sizes": sizes, "info": data.info}, default=str), flush=True)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[1500, 6000], help="dataset sizes N")
    parser.add_argument("--out", default="results/scale", help="folder for scale.md, scale.json, memory_<N>.csv")
    parser.add_argument("--work", default="outputs/experiments/scale",
                        help="datasets, caches, run folders, logs and per-N results")
    parser.add_argument("--extra", nargs="*", default=[], help="extra Hydra overrides for every job and decode run")
    parser.add_argument("--decode-workers", type=int, nargs="*", default=[1, 2],
                        help="data.num_workers values for the decode-throughput runs (none: skip them)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--interval", type=float, default=0.25, help="memory sampling interval (s)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per job or decode run (default none)")
    parser.add_argument("--max-held-gib", type=float, default=4.0, help="target: peak held at the largest N")
    parser.add_argument("--max-ratio", type=float, default=1.15,
                        help="target: peak held at the largest N / at the smallest N")
    parser.add_argument("--max-wall-per-ft-epoch", type=float, default=4.5,
                        help="target: each job's wall time over its own FT training epoch")
    parser.add_argument("--before", help="another run's scale.json, shown beside this one (same machine)")
    parser.add_argument("--before-label", default="", help="what the --before run measured (e.g. a commit)")
    parser.add_argument("--keep-cache", action="store_true", help="keep each job's cache (feature store) folder")
    parser.add_argument("--force", action="store_true", help="rerun N whose result is already in --work")
    return parser.parse_args(argv)


# --- measuring ------------------------------------------------------------------------------------------------------

def dir_bytes(path: str | Path) -> dict[str, Any]:
    """Like ``du`` over a file or folder: ``bytes`` (sum of file sizes), ``disk_bytes`` (allocated blocks), files."""
    path = Path(path)
    total = disk = files = 0
    paths = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        total, disk, files = total + st.st_size, disk + st.st_blocks * 512, files + 1
    return {"path": str(path), "bytes": total, "disk_bytes": disk, "files": files}


def run_measured(cmd: list[str], log: Path, interval: float, timeout: float | None,
                 keep_samples: bool = False) -> tuple[int, PeakMemory, float, str]:
    """Run ``cmd`` from the repo root with output to ``log`` under PeakMemory: (rc, peak, seconds, output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    with open(log, "w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        peak = PeakMemory(proc.pid, interval=interval, keep_samples=keep_samples)
        with peak:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the process group this call started
                proc.wait()
                rc = -9
                out.write(f"\n[scale_benchmark] killed after {timeout} s\n")
        seconds = time.perf_counter() - started
    return rc, peak, seconds, log.read_text(errors="replace")


def ensure_dataset(root: Path, clips: int, seed: int, timeout: float | None) -> dict[str, Any]:
    """Generate the dataset with experiments/make_us8k_av.py unless ``<root>.done.json`` says it exists."""
    done = root.with_name(root.name + ".done.json")
    if done.exists() and root.is_dir():
        record = json.loads(done.read_text())
        if record.get("clips") == clips and record.get("seed") == seed:
            return record
    if not GENERATOR.exists():
        raise FileNotFoundError(f"{GENERATOR} not found: the dataset generator is needed")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(GENERATOR), str(root), "--clips", str(clips), "--seed", str(seed)]
    print(f"[scale] generating {clips} clips: {shlex.join(cmd)}", flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, timeout=timeout)
    record = {"clips": clips, "seed": seed, "command": shlex.join(cmd),
              "generate_s": round(time.perf_counter() - started, 2)}
    for kind, sub, exts in (("audio", "Dataset_v3_sound", (".wav",)),
                            ("images", "Dataset_v3_vision", (".jpg", ".jpeg", ".png"))):
        files = [p for p in (root / sub).rglob("*") if p.suffix.lower() in exts]
        record[kind] = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    done.write_text(json.dumps(record, indent=2) + "\n")
    return record


def measure_decode(root: Path, clips: int, workers: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build only the feature store with ``data.num_workers=workers`` into a fresh cache; clips/s and memory."""
    cache = work / f"decode_{clips}_w{workers}"
    shutil.rmtree(cache, ignore_errors=True)
    overrides = [*JOB, f"data.root={root}", f"paths.cache_dir={cache}", *args.extra, f"data.num_workers={workers}"]
    cmd = [sys.executable, "-c", DECODE, json.dumps(overrides)]
    print(f"[scale] N={clips}: decode with {workers} worker(s)", flush=True)
    rc, peak, seconds, output = run_measured(cmd, work / f"decode_{clips}_w{workers}.log", args.interval,
                                             args.timeout)
    row: dict[str, Any] = {"workers": workers, "rc": rc, "process_s": round(seconds, 2), "memory": peak.summary(),
                           "overrides": overrides}
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if rc != 0 or not lines:
        row["error"] = output[-3000:]
    else:
        result = json.loads(lines[-1].removeprefix("RESULT "))
        info = result.get("info") if isinstance(result.get("info"), dict) else {}
        store = store_record(info.get("store"))
        items = store.get("items") or sum(v for v in result.get("sizes", {}).values() if isinstance(v, int)) or clips
        wall = result["seconds"]
        row.update({"load_data_s": round(wall, 2), "sizes": result.get("sizes"), "store": store, "items": items,
                    "workers_used": store.get("workers"),
                    "load_data_clips_per_s": round(items / wall, 2) if wall else None})
        # decode throughput: the store's own decode time when it reports one, else load_data's wall time
        seconds = store.get("decode_s") if isinstance(store.get("decode_s"), (int, float)) else None
        row["clips_per_s"] = round(items / seconds, 2) if seconds else row["load_data_clips_per_s"]
        row["clips_per_s_basis"] = "store decode_s" if seconds else "load_data wall"
        row["store_size"] = dir_bytes(_store_path(store, cache))
    shutil.rmtree(cache, ignore_errors=True)
    return row


def system_counters() -> dict[str, float]:
    """Machine-wide counters: pages dirtied and written back to disk (/proc/vmstat), busy and iowait CPU seconds of
    all cores (/proc/stat), and the CPU seconds of this process's finished children (the job and its workers)."""
    vmstat = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"dirtied_bytes": int(vmstat.get("nr_dirtied", 0)) * 4096,
            "written_bytes": int(vmstat.get("nr_written", 0)) * 4096,
            "busy_s": (sum(cpu) - cpu[3] - cpu[4]) / tick, "iowait_s": cpu[4] / tick,
            "children_cpu_s": children.ru_utime + children.ru_stime}


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the machine did during a job: bytes dirtied and written back, the job's CPU seconds, and the busy CPU
    seconds of everything else (the kernel's writeback included) and iowait."""
    delta = {k: after[k] - before[k] for k in before}
    return {"dirtied_bytes": delta["dirtied_bytes"], "written_bytes": delta["written_bytes"],
            "job_cpu_s": round(delta["children_cpu_s"], 1),
            "other_busy_cpu_s": round(delta["busy_s"] - delta["children_cpu_s"], 1),
            "iowait_s": round(delta["iowait_s"], 1)}


def run_job(root: Path, clips: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The default PL job on a fresh cache under PeakMemory, and what its metrics.json says."""
    cache, run_dir = work / f"cache_{clips}", work / f"run_{clips}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [*JOB, f"data.root={root}", f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}", *args.extra]
    cmd = [sys.executable, "-m", "uvav.run", *overrides]
    print(f"[scale] N={clips}: job {shlex.join(cmd)}", flush=True)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    before = system_counters()
    rc, peak, seconds, output = run_measured(cmd, work / f"run_{clips}.log", args.interval, args.timeout,
                                             keep_samples=True)
    row: dict[str, Any] = {"rc": rc, "command": shlex.join(cmd), "started_at": started_at,
                           "process_s": round(seconds, 2), "memory": peak.summary(), "timeline": peak.timeline,
                           "system": counter_delta(before, system_counters())}
    metrics_path = run_dir / "metrics.json"
    metrics = None
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as error:
            row["error"] = f"{metrics_path}: {error}"
    if metrics is not None:
        row.update(summarize_metrics(metrics, cache))
    if rc != 0 or metrics is None:
        row.setdefault("error", output[-3000:])
    row["completed"] = rc == 0 and metrics is not None and metrics.get("status") == "completed"
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return row


# --- reading metrics.json -------------------------------------------------------------------------------------------

def _pick(record: dict, *names: str) -> Any:
    for name in names:
        if record.get(name) is not None:
            return record[name]
    return None


def store_record(store: Any) -> dict[str, Any]:
    """The feature store record of ``data_info`` (``path``, ``bytes``, ``decode_s``, ``workers``, ``items``), read
    defensively: other spellings of the fields are accepted, and several stores (a list or a dict of records,
    e.g. per modality or split) are summed. The raw record is kept under ``raw``."""
    if store is None:
        return {}
    if isinstance(store, str):
        return {"path": store, "raw": store}
    records: list[dict] = []
    if isinstance(store, dict) and not any(isinstance(v, (int, float, str)) for v in store.values()):
        records = [v for v in store.values() if isinstance(v, dict)]
    elif isinstance(store, dict):
        records = [store]
    elif isinstance(store, list):
        records = [v for v in store if isinstance(v, dict)]
    fields = {"path": ("path", "dir", "folder", "root", "location"),
              "bytes": ("bytes", "nbytes", "size_bytes", "store_bytes", "size"),
              "decode_s": ("decode_s", "build_s", "seconds", "decode_seconds", "time_s"),
              "workers": ("workers", "num_workers"),
              "items": ("items", "clips", "count", "n", "num_items", "size_items")}
    out: dict[str, Any] = {"raw": store}
    for key, names in fields.items():
        values = [_pick(r, *names) for r in records]
        values = [v for v in values if v is not None]
        if not values:
            continue
        if key in ("bytes", "decode_s", "items") and all(isinstance(v, (int, float)) for v in values):
            out[key] = sum(values)
        elif key == "path":
            out[key] = values[0] if len(values) == 1 else values
        else:
            out[key] = values[0]
    if out.get("items") is not None and not isinstance(out.get("items"), (int, float)):
        out["items"] = None
    return out


def _store_path(store: dict[str, Any], cache: Path) -> Path:
    """The store's own path when the record names one that exists, else ``<cache>/features``."""
    path = store.get("path")
    if isinstance(path, list):  # several stores: their common folder
        path = os.path.commonpath(path) if path else None
    if isinstance(path, str) and Path(path).exists():
        return Path(path)
    return cache / "features"


def summarize_metrics(metrics: dict[str, Any], cache: Path) -> dict[str, Any]:
    """What the benchmark reports from a job's metrics.json (missing fields become None), and the store's size on
    disk (measured now: call it before the cache is removed)."""
    stages = {}
    for name, stage in (metrics.get("stages") or {}).items():
        stage = stage if isinstance(stage, dict) else {}
        res = stage.get("resources") if isinstance(stage.get("resources"), dict) else {}
        stages[name] = {"time_per_epoch_s": res.get("time_per_epoch_s"), "epoch_times_s": res.get("epoch_times_s"),
                        "cached_features": res.get("cached_features"), "reused": stage.get("reused"),
                        "peak_train_memory_bytes": res.get("peak_train_memory_bytes")}
    split = metrics.get("split") if isinstance(metrics.get("split"), dict) else {}
    info = metrics.get("data_info") if isinstance(metrics.get("data_info"), dict) else {}
    store = store_record(info.get("store"))
    return {
        "status": metrics.get("status"), "wall_time_s": metrics.get("wall_time_s"), "stages": stages,
        "split": {k: v for k, v in split.items() if isinstance(v, int)}, "split_how": split.get("how"),
        "store": store, "store_size": dir_bytes(_store_path(store, cache)),
        "skipped_files": len(info.get("skipped_files") or []), "device": metrics.get("device"),
        "environment": metrics.get("environment"), "reused_from": metrics.get("reused_from"),
        "timing": metrics.get("timing"),
    }


# --- report ---------------------------------------------------------------------------------------------------------

def wall_per_ft_epoch(job: dict[str, Any]) -> float | None:
    """The job's wall time (process start to exit) over its own FT training epoch."""
    epoch = ((job.get("stages") or {}).get("ft") or {}).get("time_per_epoch_s")
    return job["process_s"] / epoch if isinstance(epoch, (int, float)) and epoch > 0 else None


def targets(rows: list[dict], max_held_gib: float, max_ratio: float,
            max_wall_per_ft_epoch: float | None = None) -> list[dict[str, Any]]:
    """The memory checks, on the largest N (and the smallest, for the ratio); the time check on every N."""
    if not rows:
        return []
    time_checks = [] if max_wall_per_ft_epoch is None else [
        {"target": f"job wall at {r['clips']} clips <= {max_wall_per_ft_epoch:g} x its FT training epoch",
         "value": f"{ratio:.2f} x" if (ratio := wall_per_ft_epoch(r["job"])) is not None else "-",
         "pass": ratio is not None and ratio <= max_wall_per_ft_epoch} for r in rows]
    small, large = min(rows, key=lambda r: r["clips"]), max(rows, key=lambda r: r["clips"])
    held = large["job"]["memory"]["peak_held_bytes"]
    ok = bool(large["job"].get("completed")) and held <= max_held_gib * GIB
    out = [{"target": f"completes at {large['clips']} clips with peak held memory <= {max_held_gib:g} GiB",
            "value": f"{'completed' if large['job'].get('completed') else 'FAILED'}, {held / GIB:.3f} GiB",
            "pass": ok}]
    if small is large:
        out.append({"target": f"peak held at the largest N within {max_ratio - 1:.0%} of the smallest N",
                    "value": "needs two sizes", "pass": None})
    else:
        base = small["job"]["memory"]["peak_held_bytes"]
        ratio = held / base if base else None
        both = bool(small["job"].get("completed") and large["job"].get("completed"))
        out.append({"target": f"peak held at {large['clips']} clips <= {max_ratio:g} x at {small['clips']} clips",
                    "value": f"{ratio:.3f}" if ratio is not None else "-", "ratio": ratio,
                    "pass": both and ratio is not None and ratio <= max_ratio})
    return out + time_checks


def time_table(rows: list[dict], before: dict[str, Any] | None) -> list[str]:
    """Where each job's time went (metrics.json's ``timing``), and the wall time beside a run before."""
    lines = ["", "## Where the time went (metrics.json `timing`, seconds)", "",
             "| clips | decode | encode | train | evaluate | job wall | wall / FT epoch |", "|---" * 7 + "|"]
    for row in rows:
        job, timing = row["job"], row["job"].get("timing") or {}
        parts = [", ".join(f"{k} {v:.1f}" for k, v in (timing.get(p) or {}).items()) or "-"
                 for p in ("encode_s", "train_s", "evaluate_s")]
        lines.append(f"| {row['clips']} | {_f(timing.get('decode_s'), '{:.1f}')} | {' | '.join(parts)} | "
                     f"{_f(job.get('process_s'), '{:.0f}')} | {_f(wall_per_ft_epoch(job), '{:.2f}')} |")
    lines += ["", "What the machine did during each job (/proc/vmstat, /proc/stat; the job's CPU from its rusage):", "",
              "| clips | dirtied (GiB) | written back to disk (GiB) | job CPU (s) | other busy CPU (s) | iowait (s) |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        system = row["job"].get("system") or {}
        lines.append(f"| {row['clips']} | {_f(system.get('dirtied_bytes'), '{:.2f}', GIB)} | "
                     f"{_f(system.get('written_bytes'), '{:.2f}', GIB)} | {_f(system.get('job_cpu_s'), '{:.0f}')} | "
                     f"{_f(system.get('other_busy_cpu_s'), '{:.0f}')} | {_f(system.get('iowait_s'), '{:.0f}')} |")
    if before:
        lines += ["", f"Before: `{before['meta']['command']}` ({before['meta']['date']}, "
                  f"{before['meta'].get('label') or before['meta'].get('work')})", "",
                  "| clips | job wall before (s) | after (s) | after / before | FT epoch before (s) | after (s) | "
                  "wall / FT epoch before | after |", "|---|---|---|---|---|---|---|---|"]
        earlier = {r["clips"]: r["job"] for r in before["rows"]}
        for row in rows:
            job, old = row["job"], earlier.get(row["clips"])
            if not old:
                continue
            ft = [((j.get("stages") or {}).get("ft") or {}).get("time_per_epoch_s") for j in (old, job)]
            lines.append(f"| {row['clips']} | {old['process_s']:.0f} | {job['process_s']:.0f} | "
                         f"{job['process_s'] / old['process_s']:.2f} | {_f(ft[0], '{:.1f}')} | {_f(ft[1], '{:.1f}')} | "
                         f"{_f(wall_per_ft_epoch(old))} | {_f(wall_per_ft_epoch(job))} |")
    return lines


def _f(value: Any, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    return fmt.format(value / scale) if isinstance(value, (int, float)) else "-"


def markdown(result: dict[str, Any]) -> str:
    meta, rows = result["meta"], result["rows"]
    workers = meta["decode_workers"]
    lines = [f"# Scale benchmark: default PL job on generated UrbanSound8K-AV ({meta['host']}, {meta['cpus']} CPUs)",
             "", f"Command: `{meta['command']}`", "",
             f"Job: `python -m uvav.run {' '.join(meta['job_overrides'])} data.root=<data_N> "
             "paths.cache_dir=<fresh cache> hydra.run.dir=<run_N>` (method=pl with cached features: the defaults).",
             ""]
    head = ["clips", "train / val / test", *[f"decode clips/s ({w} worker{'s' * (w > 1)})" for w in workers],
            "store size (GiB)", "peak held (GiB)", "peak RSS (GiB)", "processes at peak",
            *[f"epoch {s} (s)" for s in STAGES], "job wall (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        job = row["job"]
        split = job.get("split") or {}
        decode = {d["workers"]: d for d in row.get("decode", [])}
        mem = job["memory"]
        cells = [str(row["clips"]) + ("" if job.get("completed") else " (failed)"),
                 " / ".join(str(split.get(k, "-")) for k in ("train", "val", "test")),
                 *[_f(decode.get(w, {}).get("clips_per_s"), "{:.1f}") for w in workers],
                 _f((job.get("store_size") or {}).get("bytes"), "{:.3f}", GIB),
                 _f(mem["peak_held_bytes"], "{:.3f}", GIB), _f(mem["peak_rss_bytes"], "{:.3f}", GIB),
                 str(mem["processes_at_peak"]),
                 *[_f(((job.get("stages") or {}).get(s) or {}).get("time_per_epoch_s")) for s in STAGES],
                 _f(job.get("process_s"), "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Targets", ""]
    for t in result["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        lines.append(f"- **{verdict}**: {t['target']} ({t['value']})")
    lines += time_table(rows, result.get("before"))
    lines += ["", "## Decode throughput (feature store build alone, fresh cache)", "",
              "| clips | workers (used) | clips/s (decode) | clips/s (load_data wall) | load_data (s) | "
              "store's decode_s | peak held (GiB) | peak RSS (GiB) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for d in row.get("decode", []):
            failed = "" if d["rc"] == 0 else " (failed)"
            used = f" ({d['workers_used']})" if d.get("workers_used") is not None else ""
            lines.append(f"| {row['clips']} | {d['workers']}{used}{failed} | {_f(d.get('clips_per_s'), '{:.1f}')} | "
                         f"{_f(d.get('load_data_clips_per_s'), '{:.1f}')} | "
                         f"{_f(d.get('load_data_s'))} | {_f((d.get('store') or {}).get('decode_s'))} | "
                         f"{_f(d['memory']['peak_held_bytes'], '{:.3f}', GIB)} | "
                         f"{_f(d['memory']['peak_rss_bytes'], '{:.3f}', GIB)} |")
    lines += ["", "## Stages", "", "| clips | stage | epoch times (s) | cached features | reused |",
              "|---|---|---|---|---|"]
    for row in rows:
        for name, stage in (row["job"].get("stages") or {}).items():
            cached = stage.get("cached_features")
            if isinstance(cached, dict):  # the scalar fields (per-split details are in scale.json)
                cached = ", ".join(f"{k} {_f(v, '{:.1f}', MIB) + ' MiB' if k.endswith('bytes') else v}"
                                   for k, v in cached.items() if isinstance(v, (int, float, str)))
            lines.append(f"| {row['clips']} | {name} | {stage.get('epoch_times_s')} | {cached or '-'} | "
                         f"{stage.get('reused') if stage.get('reused') is not None else '-'} |")
    lines += ["", "## How it is measured", "",
              f"- Memory: {TREE_MEMORY_METHOD}; sampled every {meta['interval_s']} s over the job's whole process "
              "tree (the job and its DataLoader / decode workers). Held = Pss_Anon + Pss_Shmem: anonymous and shared "
              "memory, which the kernel cannot drop; memory-mapped store files and the page cache (Pss_File) are "
              "not held. Pss splits pages shared by forked workers, so the sum counts them once; RSS counts them "
              "once per process. `memory_<N>.csv` has the samples over time (held where smaps_rollup was read). "
              "Reading smaps_rollup walks every mapped page (~60 ms for a job with 3.9 GB resident); read at every "
              "sample, as before 2026-12-07 21:45, it took ~12% of a core from the job at 1,500 clips and more at "
              "6,000 (the machine's 'other busy CPU' below).",
              "- Epoch times: each stage's `resources.time_per_epoch_s` from metrics.json (1 epoch: that epoch; "
              "training only, no validation). Job wall: the `python -m uvav.run` process, start to exit, including "
              "the feature store build (a fresh cache per job).",
              "- Store size: the sum of the file sizes under the store's folder "
              "(`data_info.store.path`, else `<cache>/features`) after the job.",
              "- Decode throughput: `load_data` alone with `data.num_workers=k` into a fresh cache; clips (one WAV "
              "+ one JPEG each) per second of the store's own `decode_s` (decoding and writing the features; "
              "load_data's whole wall time beside it). Workers used: what the store reports (it uses no more than "
              "it has chunks). The dataset's files are in the page cache (written or read just before).",
              f"- {meta['cpus']} CPUs ({meta['cpu_model']}); {meta['date']}; python {meta['python']}.", ""]
    return "\n".join(lines)


def timeline_csv(timeline: list) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["t_s", "held_bytes", "held_upper_bytes", "rss_bytes", "processes"])  # held: where it was read
    writer.writerows(timeline)
    return buf.getvalue()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for clips in sorted(set(args.clips)):
        spec = {"clips": clips, "seed": args.seed, "job": JOB, "extra": args.extra,
                "decode_workers": args.decode_workers}
        saved = work / f"result_{clips}.json"
        if saved.exists() and not args.force:
            previous = json.loads(saved.read_text())
            if previous.get("spec") == spec and previous["job"].get("completed"):
                print(f"[scale] N={clips}: reusing {saved}", flush=True)
                rows.append(previous)
                continue
        root = work / f"data_{clips}"
        dataset = ensure_dataset(root, clips, args.seed, args.timeout)
        decode = [measure_decode(root, clips, w, work, args) for w in args.decode_workers]
        job = run_job(root, clips, work, args)
        row = {"clips": clips, "spec": spec, "dataset": dataset, "decode": decode, "job": job}
        saved.write_text(json.dumps(row, indent=2, default=str) + "\n")
        rows.append(row)
        mem = job["memory"]
        print(f"[scale] N={clips}: {'completed' if job['completed'] else 'FAILED'}, peak held "
              f"{mem['peak_held_bytes'] / GIB:.3f} GiB, peak RSS {mem['peak_rss_bytes'] / GIB:.3f} GiB, "
              f"{job['process_s']:.0f} s", flush=True)
    meta = {"command": "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv]),
            "job_overrides": [*JOB, *args.extra], "decode_workers": args.decode_workers, "interval_s": args.interval,
            "host": platform.node(), "cpus": os.cpu_count(), "cpu_model": _cpu_model(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"), "work": str(work)}
    result = {"meta": meta, "rows": rows,
              "targets": targets(rows, args.max_held_gib, args.max_ratio, args.max_wall_per_ft_epoch)}
    if args.before:  # another run's scale.json (e.g. the code before a change), on the same machine
        before = json.loads(Path(args.before).read_text())
        result["before"] = {"meta": {**before["meta"], "label": args.before_label},
                            "rows": [{"clips": r["clips"], "job": {k: r["job"].get(k) for k in ("process_s", "stages")}}
                                     for r in before["rows"]]}
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        (out / f"memory_{row['clips']}.csv").write_text(timeline_csv(row["job"].get("timeline") or []))
    raw = {**result, "rows": [{**r, "job": {k: v for k, v in r["job"].items() if k != "timeline"}} for r in rows]}
    (out / "scale.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    (out / "scale.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
