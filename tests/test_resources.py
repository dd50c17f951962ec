"""uvav.resources.PeakMemory / tree_memory: held memory (Pss_Anon + Pss_Shmem) of a process tree, beside RSS."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from uvav.resources import PeakMemory, process_tree, tree_memory, tree_status

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/smaps_rollup").exists(),
    reason="needs Linux /proc/<pid>/smaps_rollup",
)

MB = 2**20
REPO = Path(__file__).resolve().parents[1]

# 200 MB written (so resident) in the parent, then a forked child that writes 100 MB of its own. The child shares
# the parent's 200 MB copy-on-write: Pss counts those pages once over the tree, RSS once per process.
FORK = textwrap.dedent("""
    import os, sys
    a = b"a" * (200 << 20)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        b = b"b" * (100 << 20)
        os.write(ready_w, b"1")
        os.read(done_r, 1)
        os._exit(0)
    os.read(ready_r, 1)
    print("ready", os.getpid(), pid, flush=True)
    sys.stdin.read()
    os.write(done_w, b"1")
    os.waitpid(pid, 0)
""")

# Memory-maps a file and reads one byte per page: its pages become resident (RSS) as file pages (Pss_File).
MMAP = textwrap.dedent("""
    import mmap, sys
    with open(sys.argv[1], "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    total = 0
    for i in range(0, len(mm), 4096):
        total += mm[i]
    print("ready", total, flush=True)
    sys.stdin.read()
""")


def _measure(script: str, *args: str) -> tuple[dict, dict, str]:
    """Run ``script``; once it prints "ready", take a sample; then let it finish. (peaks, sample, ready line)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        with PeakMemory(proc.pid, interval=0.05) as peak:
            line = proc.stdout.readline()
            assert line.startswith("ready"), line
            sample = peak.sample()
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return peak.summary(), sample, line


def _fs_type(path: Path) -> str:
    """File system type of the mount holding ``path`` (longest mount point prefix in /proc/self/mounts)."""
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1].replace("\\040", " ")
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, kind = mount, parts[2]
    return kind


def test_forked_tree_held_counts_shared_pages_once():
    summary, sample, line = _measure(FORK)
    parent, child = (int(x) for x in line.split()[1:3])
    assert sample["processes"] == 2
    # 200 MB (parent, shared with the child) + 100 MB (child) + two interpreters
    assert 290 * MB <= summary["peak_held_bytes"] <= 420 * MB, summary
    assert summary["processes_at_peak"] == 2
    # RSS counts the parent's 200 MB twice
    assert summary["peak_rss_bytes"] >= 480 * MB, summary
    assert summary["peak_rss_bytes"] - summary["peak_held_bytes"] >= 150 * MB
    held = summary["at_peak_held"]
    assert held["held"] == held["pss_anon"] + held["pss_shmem"] == summary["peak_held_bytes"]
    assert summary["samples"] >= 2 and summary["method"]
    assert parent != child


def test_mapped_file_raises_rss_but_not_held(tmp_path):
    folder = tmp_path
    if _fs_type(tmp_path) in ("tmpfs", "ramfs", ""):  # tmpfs pages are Shmem (held), not file cache
        (REPO / ".cache").mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="mmap_test_", dir=REPO / ".cache"))
        if _fs_type(folder) in ("tmpfs", "ramfs", ""):
            pytest.skip("no disk-backed folder for the memory-mapped file")
    path = folder / "mapped.bin"
    try:
        with open(path, "wb") as f:
            block = os.urandom(MB)
            for _ in range(300):
                f.write(block)
        summary, sample, _ = _measure(MMAP, str(path))
    finally:
        path.unlink(missing_ok=True)
        if folder != tmp_path:
            folder.rmdir()
    assert sample["rss"] >= 300 * MB and sample["pss_file"] >= 290 * MB, sample
    assert summary["peak_rss_bytes"] >= 300 * MB
    assert summary["peak_held_bytes"] <= 120 * MB, summary  # the interpreter's own heap, not the file


def test_process_tree_and_vanished_processes():
    proc = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                             "subprocess.run([sys.executable, '-c', 'import sys; print(1, flush=True); "
                             "sys.stdin.read()'])"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"
        tree = process_tree(proc.pid)
        assert tree[0] == proc.pid and len(tree) == 2
        assert tree_memory(proc.pid)["processes"] == 2
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    gone = tree_memory(proc.pid)  # reaped: nothing to read, nothing raised
    assert gone["processes"] == 0 and gone["held"] == 0
    peak = PeakMemory(proc.pid, interval=0.01)
    with peak:
        pass
    assert peak.summary()["samples"] == 0 and peak.peak_held == 0


def test_scale_benchmark_reads_metrics(tmp_path):
    """experiments/scale_benchmark.py: metrics.json fields (missing ones tolerated), store size, targets."""
    spec = importlib.util.spec_from_file_location("scale_benchmark", REPO / "experiments" / "scale_benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    store = tmp_path / "features" / "store"
    store.mkdir(parents=True)
    (store / "audio.bin").write_bytes(b"0" * 3000)
    (store / "image.bin").write_bytes(b"0" * 2000)
    metrics = {"status": "completed", "wall_time_s": 9.5, "split": {"train": 30, "val": 5, "test": 5, "how": "x"},
               "data_info": {"store": {"path": str(store), "bytes": 5000, "decode_s": 2.0, "num_workers": 2,
                                       "items": 40}},
               "stages": {"ft": {"reused": False, "resources": {"time_per_epoch_s": 3.0, "epoch_times_s": [3.0]}},
                          "pl": {"resources": {"time_per_epoch_s": 0.7, "cached_features": {"bytes": 10}}}}}
    got = bench.summarize_metrics(metrics, tmp_path)
    assert got["split"] == {"train": 30, "val": 5, "test": 5}
    assert got["stages"]["ft"]["time_per_epoch_s"] == 3.0 and got["stages"]["pl"]["epoch_times_s"] is None
    assert got["store"]["workers"] == 2 and got["store"]["items"] == 40
    assert got["store_size"]["bytes"] == 5000 and got["store_size"]["files"] == 2
    empty = bench.summarize_metrics({}, tmp_path)  # no store record: <cache>/features is measured
    assert empty["stages"] == {} and empty["store_size"]["bytes"] == 5000
    split = bench.store_record({"audio": {"path": "/a", "bytes": 10}, "image": {"path": "/b", "bytes": 5}})
    assert split["bytes"] == 15 and split["path"] == ["/a", "/b"]

    def row(clips, held, completed=True):
        return {"clips": clips, "job": {"completed": completed, "memory": {"peak_held_bytes": held}}}

    ok = bench.targets([row(1500, 3 * 2**30), row(6000, int(3.3 * 2**30))], 4.0, 1.15)
    assert [t["pass"] for t in ok] == [True, True]
    bad = bench.targets([row(1500, 2 * 2**30), row(6000, 5 * 2**30, completed=False)], 4.0, 1.15)
    assert [t["pass"] for t in bad] == [False, False]
    assert bench.targets([row(40, 2**30)], 4.0, 1.15)[1]["pass"] is None

    def timed(clips, wall, ft_epoch):
        return {"clips": clips, "job": {"completed": True, "memory": {"peak_held_bytes": 2**30}, "process_s": wall,
                                        "stages": {"ft": {"time_per_epoch_s": ft_epoch}},
                                        "timing": {"decode_s": 1.0, "encode_s": {"test": 2.0}, "train_s": {"ft": 4.0},
                                                   "evaluate_s": {"ft": 0.5}}}}

    fast, slow = timed(1500, 40.0, 10.0), timed(6000, 200.0, 40.0)
    checks = bench.targets([fast, slow], 4.0, 1.15, 4.5)[2:]
    assert [(t["value"], t["pass"]) for t in checks] == [("4.00 x", True), ("5.00 x", False)]
    before = {"meta": {"command": "python old", "date": "d"}, "rows": [timed(1500, 80.0, 10.0)]}
    text = "\n".join(bench.time_table([fast, slow], before))
    assert "| 1500 | 1.0 | test 2.0 | ft 4.0 | ft 0.5 | 40 | 4.00 |" in text
    assert "| 1500 | 80 | 40 | 0.50 | 10.0 | 10.0 | 8.00 | 4.00 |" in text
    counters = bench.system_counters()
    assert counters["busy_s"] > 0 and counters["written_bytes"] >= 0
    fast["job"]["system"] = bench.counter_delta(
        counters, {**counters, "written_bytes": counters["written_bytes"] + 2**31, "children_cpu_s": 30.0 +
                   counters["children_cpu_s"], "busy_s": counters["busy_s"] + 45.0})
    assert fast["job"]["system"]["job_cpu_s"] == 30.0 and fast["job"]["system"]["other_busy_cpu_s"] == 15.0
    assert "| 1500 | 0.00 | 2.00 | 30 | 15 | 0 |" in "\n".join(bench.time_table([fast, slow], before))


def test_smaps_rollup_is_read_only_when_the_cheap_bound_could_beat_the_peak():
    script = "import time; x = bytearray(120 * 2**20); print('ready', flush=True); time.sleep(1.5)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        bound, full = tree_status(proc.pid), tree_memory(proc.pid)
        assert bound["held_bound"] >= full["held"] >= 100 * MB and bound["processes"] == full["processes"] == 1
        with PeakMemory(proc.pid, interval=0.02, keep_samples=True) as peak:
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary = peak.summary()
    assert summary["peak_held_bytes"] >= 100 * MB and summary["samples"] >= 20
    assert summary["full_samples"] <= summary["samples"] // 4  # a flat process: the bound rarely beats the peak
    assert all(held is None or held <= upper for _, held, upper, _, _ in peak.timeline)
