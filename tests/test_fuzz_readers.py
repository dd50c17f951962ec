"""Property-based tests (Hypothesis) of the file readers on random and mutated inputs.

Property: every input loads, or raises one of ``READER_ERRORS`` whose message contains the file's path; never
another exception, never a hang (``TIME_LIMIT_S`` per input, by SIGALRM), never a file written outside the
input's own (temporary) folder, which is also the working directory. ``READER_ERRORS``: uvav's own
:class:`~uvav.errors.UserError` (the entrypoints print it as one line): ``DecodeError`` (WAV, image),
``DataFileError`` (datafile JSON, label CSV, metadata CSV), ``BadFileError`` (datafile entries) and
``CheckpointError``.

Examples per reader: ``UVAV_FUZZ_EXAMPLES`` (default 40, seconds in CI; the README reports a run with 300).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from uvav.data.cavmae_json import FrameReport, load_datafile, read_datafile, read_label_csv
from uvav.data.features import audio_features, load_image
from uvav.data.urbansound8k_av import read_metadata_csv
from uvav.errors import UserError
from uvav.models.classifier import AVClassifier
from uvav.weights.cavmae import load_cavmae_checkpoint

EXAMPLES = int(os.environ.get("UVAV_FUZZ_EXAMPLES", "40"))
TIME_LIMIT_S = 10
READER_ERRORS = (UserError,)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------ seeds: small valid files of each kind
def _wav(subtype: str = "PCM_16", channels: int = 1, rate: int = 16000) -> bytes:
    wave = np.sin(np.linspace(0, 200, rate // 10 * channels)).reshape(-1, channels).astype(np.float32) * 0.5
    return _wav_of(wave, subtype, rate)


def _wav_of(wave: np.ndarray, subtype: str = "FLOAT", rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def _image(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (20, 12), color=120 if mode in ("L", "I;16") else (200, 30, 90)).save(buf, format=fmt)
    return buf.getvalue()


WAV_SEEDS = [_wav(), _wav("FLOAT", 2, 44100), _wav("PCM_24", 1, 8000)]
IMAGE_SEEDS = [_image("PNG"), _image("JPEG"), _image("PNG", "L"), _image("BMP"), _image("GIF", "P")]
LABEL_CSV = b"index,mid,display_name\n0,/m/a,Dog\n1,/m/b,Cat\n"
METADATA_CSV = b"slice_file_name,fsID,start,end,salience,fold,classID,class\n1-a-0-0.wav,1,0,1,1,1,3,dog_bark\n"
DATAFILE = json.dumps({"data": [{"video_id": "v0", "wav": "a/v0.wav", "video_path": "frames", "labels": "/m/a"},
                                {"video_id": "v1", "wav": "a/v1.wav", "video_path": "frames", "labels": "/m/a,/m/b"}]})


def _checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save(_model().state_dict(), buf)
    return buf.getvalue()


def _model() -> AVClassifier:
    return AVClassifier(num_classes=3, target_length=32, num_mel_bins=32, image_size=16, embed_dim=8, num_heads=2,
                        depth=1, patch_size=16, image_patch_size=8)


CHECKPOINT = _checkpoint()


# ------------------------------------------------------------------ inputs: random bytes and mutations of seeds
def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, or a seed truncated, with bytes flipped or overwritten, or with a header field replaced by an
    extreme 32-bit value (sizes, rates, channels, widths sit in the first 64 bytes of these formats)."""
    def mutate(draw: Callable[..., Any]) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "field"]))
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            if kind == "truncate":
                del data[at:]
            elif kind == "flip":
                data[at] ^= draw(st.integers(1, 255))
            elif kind == "overwrite":
                chunk = draw(st.binary(min_size=1, max_size=16))
                data[at:at + len(chunk)] = chunk
            else:
                at = draw(st.integers(0, max(0, min(60, len(data) - 4))))
                value = draw(st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1, 3, 255]))
                data[at:at + 4] = struct.pack("<I", value)
        return bytes(data)

    return st.one_of(st.binary(max_size=2048), st.composite(lambda draw: mutate(draw))())


@contextlib.contextmanager
def isolated(data: bytes, name: str) -> Iterator[Path]:
    """``data`` written to ``name`` in a fresh folder that is the working directory and the temporary folder
    (``TMPDIR``, :mod:`tempfile`) while the reader runs; afterwards that folder must hold nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        cwd, tmpdir, env = os.getcwd(), tempfile.tempdir, os.environ.get("TMPDIR")
        os.chdir(folder)
        tempfile.tempdir, os.environ["TMPDIR"] = folder, folder
        previous = signal.signal(signal.SIGALRM, _too_slow)
        signal.alarm(TIME_LIMIT_S)
        try:
            yield path
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            os.chdir(cwd)
            tempfile.tempdir = tmpdir
            if env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = env
        assert sorted(p.name for p in Path(folder).iterdir()) == [name], "the reader wrote beside its input"


class ReaderHang(Exception):
    pass


def _too_slow(*_: Any) -> None:
    raise ReaderHang(f"a reader ran longer than {TIME_LIMIT_S} s")


def loads_or_names_the_file(read: Callable[[Path], Any], data: bytes, name: str) -> Any:
    """``read(path)``: its result, or None after one of ``READER_ERRORS`` whose message contains the path."""
    with isolated(data, name) as path:
        try:
            return read(path)
        except READER_ERRORS as exc:
            assert str(path) in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
            return None


# ------------------------------------------------------------------ the properties
@FUZZ
@given(mutated(WAV_SEEDS))
def test_wav_reader(data: bytes) -> None:
    out = loads_or_names_the_file(lambda p: audio_features(p, 64, 32), data, "clip.wav")
    if out is not None:
        assert out[0].shape == (64, 32) and torch.isfinite(out[0]).all()


@FUZZ
@given(mutated(IMAGE_SEEDS))
def test_image_reader(data: bytes) -> None:
    out = loads_or_names_the_file(lambda p: load_image(p, 16), data, "frame.jpg")
    assert out is None or (out.shape == (3, 16, 16) and out.dtype == torch.uint8)


@FUZZ
@given(mutated([LABEL_CSV]) | st.text(max_size=300).map(str.encode))
def test_label_csv_reader(data: bytes) -> None:
    out = loads_or_names_the_file(read_label_csv, data, "labels.csv")
    if out is not None:
        names, mids = out
        assert len(names) == len(mids) and sorted(mids.values()) == list(range(len(mids)))


@FUZZ
@given(mutated([METADATA_CSV]) | st.text(max_size=300).map(str.encode))
def test_metadata_csv_reader(data: bytes) -> None:
    out = loads_or_names_the_file(read_metadata_csv, data, "UrbanSound8K.csv")
    assert out is None or all(isinstance(f, int) and isinstance(c, int) for f, c in out.values())


# no subnormal floats: uvav's pipeline flushes denormals process-wide (torch.set_flush_denormal), which Hypothesis
# cannot generate under
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=12)
JSON_VALUES = st.recursive(JSON_SCALARS,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)
ENTRY = st.fixed_dictionaries({}, optional={k: JSON_VALUES | st.sampled_from(["/m/a", "/m/a,/m/b", "x/y.wav", ""])
                                            for k in ("video_id", "wav", "video_path", "labels")})
DATAFILES = st.one_of(
    mutated([DATAFILE.encode()]),
    st.lists(ENTRY, max_size=4).map(lambda rows: json.dumps({"data": rows}).encode()),
    st.integers(1, 100_000).map(lambda depth: ("[" * depth + "]" * depth).encode()),  # deeper than recursion allows
)


@FUZZ
@given(DATAFILES)
def test_datafile_reader(data: bytes) -> None:
    def read(path: Path) -> list[Any]:
        return read_datafile(path, load_datafile(path), {"/m/a": 0, "/m/b": 1}, [0], 1, multi_label=True,
                             on_bad_file="skip", skipped=[], report=FrameReport())

    out = loads_or_names_the_file(read, data, "train.json")
    assert out is None or out == []  # no entry's audio and frames exist beside it


STATE_VALUES = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                         st.lists(st.integers(0, 5), max_size=4).map(tuple),
                         st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.complex64]))
STATE_KEYS = st.sampled_from([*_model().state_dict(), "module.patch_embed_a.proj.weight", "pos_embed_a",
                              "pos_embed_v", "blocks_a.0.attn.qkv.weight", "mlp_head.1.bias", "x"])


def _saved(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


CHECKPOINTS = st.one_of(
    mutated([CHECKPOINT]),
    st.dictionaries(STATE_KEYS, STATE_VALUES, max_size=6).map(_saved),
    st.dictionaries(st.sampled_from(["model", "state_dict"]), JSON_VALUES, max_size=2).map(_saved),
)


@FUZZ
@given(CHECKPOINTS)
def test_checkpoint_loader(data: bytes) -> None:
    loads_or_names_the_file(lambda p: load_cavmae_checkpoint(_model(), p), data, "model.pt")


def test_the_seeds_load() -> None:
    """The unmutated seeds are valid inputs (else the mutations would test nothing)."""
    assert loads_or_names_the_file(lambda p: audio_features(p, 64, 32), WAV_SEEDS[1], "a.wav") is not None
    assert all(loads_or_names_the_file(lambda p: load_image(p, 16), s, "f.img") is not None for s in IMAGE_SEEDS)
    assert loads_or_names_the_file(read_label_csv, LABEL_CSV, "labels.csv")[0] == ["Dog", "Cat"]
    assert loads_or_names_the_file(read_metadata_csv, METADATA_CSV, "m.csv") == {"1-a-0-0": (1, 3)}
    assert loads_or_names_the_file(lambda p: load_cavmae_checkpoint(_model(), p), CHECKPOINT, "m.pt").loaded


@pytest.mark.parametrize("data,name,read", [
    (b"[" * 200_000 + b"]" * 200_000, "deep.json", load_datafile),
    (b"index,mid\n0," + b"x" * 200_000 + b"\n", "labels.csv", read_label_csv),
    (b"\xff\xfe\x00index,mid\n", "labels.csv", read_label_csv),
    (WAV_SEEDS[0][:24] + struct.pack("<I", 2**31 - 1) + WAV_SEEDS[0][28:], "rate.wav",
     lambda p: audio_features(p, 64, 32)),
    (_wav_of(np.full((1600, 1), 3e38, dtype=np.float32)), "loud.wav", lambda p: audio_features(p, 64, 32)),
])
def test_found_by_fuzzing(data: bytes, name: str, read: Callable[[Path], Any]) -> None:
    """Inputs that raised another exception (RecursionError, csv.Error, UnicodeDecodeError), ran for minutes (a WAV
    header's sample rate of 2^31 - 1 Hz: resampling's filter) or gave infinite features (float samples near the
    float32 limit) before the readers handled them."""
    assert loads_or_names_the_file(read, data, name) is None
