"""Issue 15's server defects, one regression test each: deep JSON answered 500 (1), decoding memory unbounded and
kept (2), ``/metrics`` growing with every unknown path and disconnects counted as 5xx (11); plus the limits' parts
(JSON depth and cost, image header, decode slots) and ``compressor serve`` refusing a bad model file."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from compressor.export import OnnxClassifier
from compressor.export.limits import (
    MAX_JSON_DEPTH,
    DecodeSlots,
    OverLimit,
    decode_bytes,
    json_batch,
    json_depth,
    json_parse_bytes,
)
from compressor.export.preprocess import InputError, image_header
from compressor.export.server import ServerConfig, create_app
from fastapi.testclient import TestClient

from compressor.cli import main
from tests.bad_requests import png_bytes, png_header, png_zeros
from tests.deploy_models import linear_model

PROMETHEUS_SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? (-?[0-9.e+-]+|NaN)$')


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> OnnxClassifier:
    return OnnxClassifier(linear_model(tmp_path_factory.mktemp("limits") / "model.onnx", classes=4).path)


def client_for(classifier: OnnxClassifier, **config) -> TestClient:
    """An in-process client; an exception inside the app would fail the test (``raise_server_exceptions``)."""
    return TestClient(create_app(classifier, ServerConfig(**config)))


def test_defect_1_deeply_nested_json_is_a_422_not_a_500(classifier):
    body = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert 10_000 <= len(body) <= 10_020  # the 10 KB body of the report
    with client_for(classifier) as client:
        answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 422 and "nests 5001 levels" in answer.json()["detail"]
        assert client.get("/metrics").json()["errors_5xx"] == 0


def test_json_depth_and_the_deepest_accepted_body():
    assert json_depth(b'{"inputs": [[[[0]]]]}') == MAX_JSON_DEPTH - 1
    assert json_depth(b"[" * 3 + b"]" * 3 + b"[[]]") == 3  # the deepest point, not the number of brackets
    assert json_depth(b"[" * 3_000_000, chunk=1 << 16) == 3_000_000  # carried across chunks
    batch = json_batch(json.dumps({"inputs": np.zeros((2, 1, 8, 8)).tolist()}).encode(), 1, 8, 1 << 30)
    assert batch.shape == (2, 1, 8, 8)
    with pytest.raises(InputError, match="nests 7 levels"):
        json_batch(b'{"inputs": [[[[[[0]]]]]]}', 1, 8, 1 << 30)


def test_json_parse_cost_is_refused_before_parsing():
    body = b'{"inputs": [' + b"[[]]," * 20_000 + b"[[]]]}"  # 100 KB that json.loads would turn into 40,000 lists
    assert json_parse_bytes(body) > 40_000 * 100
    with pytest.raises(OverLimit, match="to parse"):
        json_batch(body, 1, 8, json_parse_bytes(body) - 1)
    with pytest.raises(InputError, match="empty"):  # within the limit it is parsed, then refused for its shape
        json_batch(body, 1, 8, json_parse_bytes(body))


def test_image_header_counts_bit_depth_and_channels():
    gray8, rgba16 = image_header(png_header(1000, 700, 8, 0)), image_header(png_header(1000, 700, 16, 6))
    assert (gray8.format, gray8.width, gray8.height, gray8.bytes_per_pixel) == ("PNG", 1000, 700, 1)
    assert rgba16.bytes_per_pixel == 8  # 16 bits x 4 channels, more than Pillow's 4 bytes for RGBA
    assert image_header(png_header(10, 10, 16, 0)).bytes_per_pixel == 2  # Pillow's I;16
    assert image_header(png_header(10, 10, 8, 2)).bytes_per_pixel == 4  # RGB is stored in 4 bytes by Pillow
    assert image_header(b"not an image") is None
    assert image_header(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n") is None  # EPS is not accepted
    assert decode_bytes(rgba16) > decode_bytes(gray8)


def test_defect_2_a_small_png_that_decodes_to_hundreds_of_mb_is_refused_from_its_header(classifier):
    bomb = png_header(7900, 7900, 16, 6)  # the header of the report's 485 KB PNG, over 64 bytes of pixel data
    assert decode_bytes(image_header(bomb)) > 500 << 20
    with client_for(classifier, max_image_bytes=128 << 20) as client:
        for args in ({"content": bomb, "headers": {"content-type": "image/png"}},
                     {"files": {"file": ("bomb.png", bomb, "image/png")}}):
            answer = client.post("/predict", **args)
            # 413 from the header alone: decoding the 64 bytes of pixel data would have answered 422 (truncated)
            assert answer.status_code == 413, answer.text
            assert "7900x7900 PNG image with 8 bytes per decoded pixel" in answer.json()["detail"]


def test_the_limit_counts_bytes_per_pixel_not_pixels(classifier):
    gray, rgba16 = png_zeros(1000, 1000, 8, 0), png_zeros(1000, 1000, 16, 6)  # same pixels, 1 vs 8 bytes each
    limit = (decode_bytes(image_header(gray)) + decode_bytes(image_header(rgba16))) // 2
    with client_for(classifier, max_image_bytes=limit) as client:
        assert client.post("/predict", content=gray, headers={"content-type": "image/png"}).status_code == 200
        assert client.post("/predict", content=rgba16, headers={"content-type": "image/png"}).status_code == 413


def test_decode_slots_bound_concurrent_decodes():
    slots, running, most = DecodeSlots(2), [0], [0]
    lock = threading.Lock()

    def work() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1

    async def main() -> None:
        await asyncio.gather(*(slots.run(False, work) for _ in range(8)), *(slots.run(True, work) for _ in range(2)))

    asyncio.run(main())
    assert most[0] == 2 and slots.snapshot() == {"slots": 2, "running": 0, "waiting": 0, "peak_running": 2,
                                                 "total": 10}
    with pytest.raises(ValueError):
        DecodeSlots(0)


RETENTION = """
import sys
from concurrent.futures import ThreadPoolExecutor
from compressor.export.limits import decode_within, return_freed_memory_to_os
from tests.bad_requests import png_zeros
applied = sys.argv[1] == "1" and return_freed_memory_to_os()
data = png_zeros(1000, 1000, 8, 6)  # 8-bit RGBA (16-bit colour is refused before decoding): about 4 MB to decode
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
before = resident()
with ThreadPoolExecutor(8) as pool:
    for _ in range(3):
        list(pool.map(lambda _: decode_within(data, 1, 8, "x", 1 << 30), range(8)))
print(applied, resident() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc")
def test_defect_2_memory_of_concurrent_decodes_goes_back_to_the_system():
    """8 threads decoding 4 MB images kept ~25 MB resident afterwards; with mmap for large blocks, ~4 MB."""
    def retained(apply: str) -> tuple[bool, int]:
        out = subprocess.run([sys.executable, "-c", RETENTION, apply], capture_output=True, text=True, check=True)
        applied, kept = out.stdout.split()
        return applied == "True", int(kept)

    applied, kept = retained("1")
    if not applied:
        pytest.skip("not glibc: mallopt is not available")
    # Without the setting glibc kept ~25 MB here on a quiet machine, but between 8 and 20 MB under load (its
    # trim heuristics depend on timing), so only the configured server is held to the bound.
    assert kept < 20 << 20, kept


def test_defect_11_unknown_paths_are_one_bucket_and_metrics_stay_small(classifier):
    with client_for(classifier) as client:
        size = len(client.get("/metrics").content)
        for i in range(300):
            assert client.get(f"/no/such/path/{i}").status_code == 404
        client.get("/health")
        metrics = client.get("/metrics").json()
        assert metrics["requests_by_route"] == {"/health": 1, "/metrics": 1, "other": 300}
        assert metrics["responses_by_route"]["other"] == {"404": 300}
        assert len(client.get("/metrics").content) < size + 200  # the report: 1 KB grew to 655 KB over 3,000 paths


def test_metrics_in_prometheus_text_format(classifier):
    with client_for(classifier) as client:
        image = np.zeros((8, 8), dtype=np.uint8)
        assert client.post("/predict", content=png_bytes(image), headers={"content-type": "image/png"}).is_success
        client.get("/nowhere")
        for answer in (client.get("/metrics?format=prometheus"),
                       client.get("/metrics", headers={"accept": "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"})):
            assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
            lines = answer.text.splitlines()
            samples = [line for line in lines if not line.startswith("#")]
            assert samples and all(PROMETHEUS_SAMPLE.match(line) for line in samples), samples
            assert 'compressor_http_responses_total{route="/predict",status="200"} 1' in samples
            assert 'compressor_http_responses_total{route="other",status="404"} 1' in samples
            assert "compressor_predict_latency_seconds_count 1" in samples
            assert "compressor_decodes_total 1" in samples and "compressor_decode_slots 4" in samples
            families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
            assert len(families) == len(set(families))  # each family declared once
        assert client.get("/metrics", headers={"accept": "*/*"}).json()["decodes"]["total"] == 1
        assert client.get("/metrics?format=json", headers={"accept": "text/plain"}).json()["limits"][
            "max_concurrent_decodes"] == 4


def test_defect_11_a_disconnect_while_the_body_arrives_is_counted_not_an_error(classifier):
    app = create_app(classifier)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def main() -> None:
        scope = {"type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
                 "headers": [(b"content-type", b"image/png")], "http_version": "1.1", "scheme": "http",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5), "root_path": "", "app": app}
        await app(scope, receive, send)  # no exception: ServerErrorMiddleware would have logged a traceback

    asyncio.run(main())
    assert sent == []  # nothing to answer: the client is gone
    with TestClient(app) as client:
        metrics = client.get("/metrics").json()
    assert metrics["client_disconnects"] == 1 and metrics["errors_5xx"] == 0 and metrics["in_flight"] == 0


@pytest.mark.parametrize("content", [b"garbage", b"", bytes(range(256)) * 4])
def test_serve_refuses_a_bad_model_file_with_exit_2_and_one_line(tmp_path, content):
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    result = CliRunner().invoke(main, ["serve", str(model), "--port", "0"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.onnx" in lines[0]


def test_serve_refuses_an_onnx_file_without_compressor_metadata(tmp_path):
    model = linear_model(tmp_path / "plain.onnx", metadata=False)
    result = CliRunner().invoke(main, ["serve", str(model.path), "--port", "0"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output


def test_a_truncated_real_image_is_refused_whatever_its_size(classifier):
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    with client_for(classifier) as client:
        for cut in (8, 33, 60, len(data) // 2):
            answer = client.post("/predict", content=data[:cut], headers={"content-type": "image/png"})
            assert answer.status_code == 422 and "not a decodable image" in answer.json()["detail"], cut
