"""The on-disk feature store: parallel decoding, crash recovery, verification, disk space, reading."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import namedtuple
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import uvav.data.store_build as build_mod
from uvav.data import load_data
from uvav.data.features import BadFileError, audio_features, images_to_float, load_image
from uvav.data.store import FeatureStore, StoreSpaceError, StoreSpec, StoreSplit
from uvav.data.store_build import build_store
from uvav.data.urbansound8k_av import UrbanSound8KAVDataConfig, list_pairs

from .conftest import make_us8k, stack

CHUNK = 8  # 40 clips -> 5 chunks


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(build_mod, "CHUNK_SIZE", CHUNK)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "us8k"
    make_us8k(root, 4)
    return root


def config(root: Path, cache: Path, **kw):
    base = dict(root=str(root), target_length=64, num_mel_bins=32, image_size=32, cache_dir=str(cache),
                num_workers=0)
    return OmegaConf.structured(UrbanSound8KAVDataConfig(**{**base, **kw}))


def store_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("chunk-*.npy"))}


def test_two_workers_write_the_same_bytes_as_one(root: Path, tmp_path: Path) -> None:
    one = load_data(config(root, tmp_path / "a", num_workers=0))
    two = load_data(config(root, tmp_path / "b", num_workers=2))
    assert (one.info["store"]["workers"], two.info["store"]["workers"]) == (1, 2)
    assert two.info["store"]["chunks_decoded"] == 5 and not two.info["store"]["hit"]
    a, b = Path(one.info["store"]["path"]), Path(two.info["store"]["path"])
    assert a.name == b.name and len(store_files(a)) == 10
    assert store_files(a) == store_files(b)
    meta = json.loads((b / "store.json").read_text())
    assert meta["items"] == 40 and meta["chunk_size"] == CHUNK and meta["audio"]["dtype"] == "float16"
    assert meta["visual"]["shape"] == [40, 1, 3, 32, 32]  # one frame per clip


def test_samples_equal_direct_decoding_up_to_float16(root: Path, tmp_path: Path) -> None:
    data = load_data(config(root, tmp_path))
    pairs = list_pairs(root, "error", [])
    norm = data.info["normalization"]
    for split in (data.train, data.test):
        for i in range(len(split)):
            pair = pairs[int(split.rows[i])]
            audio, visual = split.sample(i)
            direct = audio_features(pair.audio, 64, 32)[0].half().float()
            assert torch.equal(audio, (direct - norm["audio_mean"]) / norm["audio_std"])
            assert torch.equal(visual, images_to_float(load_image(pair.image, 32)[None])[0])
            assert split.labels[i] == pair.label


def test_audio_stats_streamed_and_cached(root: Path, tmp_path: Path) -> None:
    data = load_data(config(root, tmp_path, normalize="cavmae"))
    store, rows = data.train.store, data.train.rows
    everything = np.stack([store.read(int(r))[0] for r in rows]).astype(np.float64)
    mean, std = store.audio_stats(rows)
    assert mean == pytest.approx(everything.mean(), rel=1e-12) and std == pytest.approx(everything.std(ddof=1))
    assert len(list(store.folder.glob("stats-*.json"))) == 1
    assert store.audio_stats(rows.flip(0)) == (mean, std)  # order does not matter; read from the cache
    shifted = data.train.with_audio_normalization(mean, std)
    assert torch.allclose(stack(shifted)[0].mean(), torch.tensor(0.0), atol=1e-4)
    part = data.train.subset(torch.tensor([2, 0]))
    assert torch.equal(part.sample(1)[0], data.train.sample(0)[0]) and part.labels.tolist() == data.train.labels[
        [2, 0]].tolist()


def test_pickled_split_carries_no_arrays(root: Path, tmp_path: Path) -> None:
    split = load_data(config(root, tmp_path)).train
    for i in range(len(split)):
        split.sample(i)
    assert split.store._maps  # maps are open in this process
    blob = pickle.dumps(split)
    assert len(blob) < 100_000
    copy = pickle.loads(blob)
    assert isinstance(copy, StoreSplit) and not copy.store._maps
    assert torch.equal(copy.sample(3)[0], split.sample(3)[0]) and torch.equal(copy.labels, split.labels)


def test_damaged_chunks_are_rebuilt_with_a_warning(root: Path, tmp_path: Path) -> None:
    data = load_data(config(root, tmp_path))
    folder = Path(data.info["store"]["path"])
    before = store_files(folder)
    truncated, flipped = folder / "chunk-00001.audio.npy", folder / "chunk-00003.visual.npy"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    raw = bytearray(flipped.read_bytes())
    raw[-5] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    os.utime(flipped, ns=(time.time_ns(), time.time_ns() + 10**9))  # the write changed the mtime
    with pytest.warns(UserWarning) as record:
        again = load_data(config(root, tmp_path))
    messages = " ".join(str(w.message) for w in record)
    assert "chunk-00001.audio.npy truncated" in messages and "chunk-00003.visual.npy fails its sha256" in messages
    assert again.info["store"]["hit"] and again.info["store"]["chunks_rebuilt"] == 2
    assert store_files(folder) == before
    assert torch.equal(stack(again.train)[0], stack(data.train)[0])


def test_verify_store_rehashes_unchanged_looking_files(root: Path, tmp_path: Path) -> None:
    folder = Path(load_data(config(root, tmp_path)).info["store"]["path"])
    target = folder / "chunk-00002.audio.npy"
    stat = target.stat()
    raw = bytearray(target.read_bytes())
    raw[-3] ^= 0x01
    target.write_bytes(bytes(raw))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only a hash sees it
    assert load_data(config(root, tmp_path)).info["store"]["chunks_rebuilt"] == 0
    with pytest.warns(UserWarning, match="chunk-00002.audio.npy fails its sha256"):
        fixed = load_data(config(root, tmp_path, verify_store=True))
    assert fixed.info["store"]["chunks_rebuilt"] == 1 and target.read_bytes() != bytes(raw)


def test_touched_but_intact_chunk_is_kept(root: Path, tmp_path: Path) -> None:
    folder = Path(load_data(config(root, tmp_path)).info["store"]["path"])
    target = folder / "chunk-00000.visual.npy"
    inode = target.stat().st_ino
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_data(config(root, tmp_path)).info["store"]["chunks_rebuilt"] == 0
    meta = json.loads((folder / "chunk-00000.json").read_text())
    assert target.stat().st_ino == inode and meta["files"]["visual"]["mtime_ns"] == target.stat().st_mtime_ns


def test_disk_full_before_decoding(root: Path, tmp_path: Path, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(build_mod.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(StoreSpaceError) as err:
        load_data(config(root, tmp_path / "c"))
    needed = 40 * (64 * 32 * 2 + 3 * 32 * 32 + 128) + 5 * 4096 + 65536
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert str(tmp_path / "c" / "urbansound8k_av-") in str(err.value)
    assert f"({needed} bytes)" in str(err.value) and "(1000 bytes) are free" in str(err.value)
    assert not list((tmp_path / "c").glob("*/store.json")) and not list((tmp_path / "c").glob("*/chunk-*"))


def test_disk_full_while_writing(root: Path, tmp_path: Path, monkeypatch) -> None:
    real = build_mod._HashingWriter.write
    calls = []

    def fill_up(self, data: bytes) -> int:
        calls.append(1)
        if len(calls) > 6:  # the first chunks fit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(build_mod._HashingWriter, "write", fill_up)
    with pytest.raises(StoreSpaceError, match=r"urbansound8k_av-\w+: needs .* bytes"):
        load_data(config(root, tmp_path))
    folder = next(tmp_path.glob("urbansound8k_av-*"))
    assert not (folder / "store.json").exists() and not list(folder.glob("*.tmp"))
    assert (folder / "chunk-00000.json").exists()  # finished chunks stay for the next try


RESUME_SCRIPT = """
import sys
import uvav.data.store_build as store_build
from omegaconf import OmegaConf
from uvav.data.urbansound8k_av import UrbanSound8KAVDataConfig
from uvav.data import load_data
store_build.CHUNK_SIZE = {chunk}
load_data(OmegaConf.structured(UrbanSound8KAVDataConfig(
    root=sys.argv[1], cache_dir=sys.argv[2], target_length=64, num_mel_bins=32, image_size=32, num_workers=2)))
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def lock_is_free(path: Path) -> bool:
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_during_build_then_resume(root: Path, tmp_path: Path) -> None:
    """SIGKILL a build on two decoding processes once each has written a chunk and started the next."""
    marker, cache, log = tmp_path / "paused", tmp_path / "cache", tmp_path / "stderr.txt"
    script = tmp_path / "build.py"
    script.write_text(RESUME_SCRIPT.format(chunk=CHUNK))
    env = {**os.environ, build_mod.PAUSE_ENV: f"1:{marker}"}
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(cache)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, "the build never reached its pause", 60)
        assert proc.poll() is None, log.read_text()
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(workers) == 2
    wait_for(lambda: not any(alive(w) for w in workers), "decoding processes outlived the build")
    folder = next(cache.glob("urbansound8k_av-*"))
    assert lock_is_free(folder / ".lock")
    # a chunk counts as written once its json exists (the other process may have renamed its npy files, not more)
    finished = sorted(p.name[:11] for p in folder.glob("chunk-*.json"))
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("chunk-*[ny]")  # not *.tmp
            if p.name[:11] in finished}
    assert finished and len(done) == 3 * len(finished) and len(finished) < 5
    assert list(folder.glob("*.tmp")) and not (folder / "store.json").exists()  # killed mid-chunk

    resumed = load_data(config(root, cache, num_workers=2))
    assert resumed.info["store"]["chunks_decoded"] == 5 - len(finished) and not resumed.info["store"]["hit"]
    assert {n: ((folder / n).stat().st_ino, (folder / n).stat().st_mtime_ns) for n in done} == done
    assert not list(folder.glob("*.tmp")) and (folder / "store.json").exists()
    fresh = load_data(config(root, tmp_path / "fresh"))
    assert store_files(folder) == store_files(Path(fresh.info["store"]["path"]))
    assert torch.equal(stack(resumed.train)[0], stack(fresh.train)[0])


def fake_decode(item: int, log: str) -> tuple[torch.Tensor, bool, torch.Tensor]:
    with open(log, "a") as fh:
        fh.write(f"{item}\n")
    time.sleep(0.05)
    return torch.full((4, 2), float(item)), item == 0, torch.full((3, 2, 2), item, dtype=torch.uint8)


def build_fake(cache: str, src: str, log: str) -> FeatureStore:
    spec = StoreSpec("fake", partial(fake_decode, log=log), (4, 2), (3, 2, 2))
    return build_store(spec, list(range(20)), [src], {"k": 1}, cache, workers=0)


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    src, log = tmp_path / "src.bin", tmp_path / "log.txt"
    src.write_bytes(b"abc")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=build_fake, args=(str(tmp_path / "c"), str(src), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(int(x) for x in log.read_text().split()) == list(range(20))  # each item decoded once
    store = build_fake(str(tmp_path / "c"), str(src), str(log))
    assert store.report["hit"] and len(store) == 20 and store.short_rows == [0]
    audio, visual = store.read(13)
    assert audio.dtype == np.float16 and (audio == 13).all() and visual.dtype == np.uint8 and (visual == 13).all()
    with pytest.raises(IndexError):
        store.read(20)
    assert FeatureStore.open(store.folder).items == 20


def test_bad_file_keeps_its_slot(root: Path, tmp_path: Path) -> None:
    pairs = list_pairs(root, "error", [])
    data_root = tmp_path / "copy"
    make_us8k(data_root, 4)
    bad = data_root / pairs[9].audio.relative_to(root)
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(BadFileError, match=str(bad)):  # raised in a worker process
        load_data(config(data_root, tmp_path / "c", num_workers=2))
    data = load_data(config(data_root, tmp_path / "c", on_bad_file="skip", num_workers=2))
    store = data.train.store
    assert store.ok.tolist() == [i != 9 for i in range(40)] and store.skipped[0]["path"] == str(bad)
    assert not np.asarray(store.read(9)[0]).any() and 9 not in torch.cat([data.train.rows, data.test.rows]).tolist()
