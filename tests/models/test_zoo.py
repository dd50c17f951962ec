"""Weights by path, URL or published name: downloads from a real HTTP server on 127.0.0.1 (progress, cache, resume
of a cut-off transfer, sha256), the messages without network, and the provenance a job records."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from uvav.weights import zoo
from uvav.weights.zoo import WeightsError, resolve


class Server:
    """Serves ``files`` (name -> bytes) with HTTP Range support; ``cut`` names files whose first response stops
    halfway (Content-Length says all)."""

    def __init__(self, files: dict[str, bytes], cut: set[str] = frozenset()) -> None:
        self.files, self.cut, self.requests = files, set(cut), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                name = self.path.lstrip("/").split("?")[0]
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if name in server.cut:
                    server.cut.discard(name)
                    self.wfile.write(data[start:start + (len(data) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payload() -> bytes:
    return bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def server(payload):
    srv = Server({"audio_model.21.pth": payload, "half.pth": payload})
    yield srv
    srv.close()


def test_url_downloads_once_into_the_cache(server, payload, tmp_path):
    source = resolve(f"{server.url}/audio_model.21.pth?dl=1", folder=tmp_path, progress=False)
    assert source.kind == "url" and Path(source.path).read_bytes() == payload
    assert source.sha256 == hashlib.sha256(payload).hexdigest() and Path(source.path).parent == tmp_path
    again = resolve(f"{server.url}/audio_model.21.pth?dl=1", folder=tmp_path, progress=False)
    assert again.path == source.path and len(server.requests) == 1  # cached: no second request
    assert not list(tmp_path.glob("*.partial"))


def test_published_name_resolves_to_its_url(server, payload, tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.PUBLISHED, "cavmae_scale++", f"{server.url}/audio_model.21.pth?dl=1")
    source = resolve("cavmae_scale++", folder=tmp_path, progress=False)
    assert source.kind == "name" and Path(source.path).name == "cavmae_scale++.pth"
    assert source.url.endswith("/audio_model.21.pth?dl=1") and Path(source.path).read_bytes() == payload


def test_a_cut_off_download_is_not_taken_and_the_next_run_resumes(payload, tmp_path):
    srv = Server({"half.pth": payload}, cut={"half.pth"})
    try:
        with pytest.raises(WeightsError, match="stopped at 524288 of 1048576 bytes; the next run resumes"):
            resolve(f"{srv.url}/half.pth", folder=tmp_path, progress=False)
        assert not [p for p in tmp_path.iterdir() if p.suffix == ".pth"]  # nothing renamed as complete
        source = resolve(f"{srv.url}/half.pth", folder=tmp_path, progress=False)
        assert Path(source.path).read_bytes() == payload
        assert srv.requests[-1] == ("half.pth", "bytes=524288-")  # only the rest was asked for
    finally:
        srv.close()


def test_sha256_mismatch_deletes_the_download_and_names_both(server, payload, tmp_path):
    good = hashlib.sha256(payload).hexdigest()
    with pytest.raises(WeightsError, match=f"sha256 {good}, expected {'0' * 64}.*deleted"):
        resolve(f"{server.url}/audio_model.21.pth", sha256="0" * 64, folder=tmp_path, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".pth"]
    assert resolve(f"{server.url}/audio_model.21.pth", sha256=good, folder=tmp_path, progress=False).sha256 == good


def test_without_network_the_message_names_the_url_and_where_to_put_the_file(tmp_path):
    srv = Server({})
    url = f"{srv.url}/gone.pth"
    srv.close()  # nothing listens on the port any more
    with pytest.raises(WeightsError, match=f"cannot download {url}.*place it at {tmp_path}"):
        resolve(url, folder=tmp_path, progress=False)


def test_local_paths_and_file_urls(tmp_path):
    file = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, file)
    assert resolve(str(file)).kind == "path" and resolve(f"file://{file}").path == str(file.resolve())
    with pytest.raises(WeightsError, match="no such file.*cavmae_scale\\+\\+"):
        resolve(str(tmp_path / "absent.pth"))


def test_a_job_records_where_its_weights_came_from(server, tmp_path, monkeypatch):
    """A tiny CAV-MAE-layout checkpoint served over HTTP starts the FT model; metrics.json says from where."""
    from uvav.pipeline import run_pipeline

    from ..conftest import compose_config
    from .test_checkpoints import fake_cavmae

    cfg = compose_config("method=ft", "backbone.patch_size=16", "backbone.image_patch_size=16", "data.target_length=64",
                         "data.num_mel_bins=128", "data.image_size=32", f"paths.cache_dir={tmp_path / 'cache'}")
    state = fake_cavmae(dim=cfg.backbone.embed_dim, depth=cfg.backbone.depth, audio_tokens=32, decoder=False)
    state = {k: (v[:, :4] if k == "pos_embed_v" else v) for k, v in state.items()}  # 32 px: 2x2 image patches
    blob = tmp_path / "ckpt.pth"
    torch.save(state, blob)
    server.files["ckpt.pth"] = blob.read_bytes()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg.backbone.checkpoint = f"{server.url}/ckpt.pth"
    metrics = run_pipeline(cfg, tmp_path / "job")
    weights = metrics["initial_weights"]
    assert weights["kind"] == "url" and weights["sha256"] == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert weights["loaded"] > 0 and any(k.startswith("fusion.") for k in weights["missing"])
    assert Path(weights["path"]).is_relative_to(tmp_path / "torch" / "hub" / "checkpoints")
