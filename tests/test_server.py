"""The real HTTP server on a free loopback port: predictions equal OnnxClassifier's, concurrent requests are
micro-batched, every bad input gets a 4xx and the server keeps serving; ``compressor serve`` starts it."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from compressor.export import OnnxClassifier
from compressor.export.server import ServerConfig, create_app, inline_headers, is_loopback

from tests.bad_requests import bad_requests, png_bytes
from tests.deploy_models import linear_model

MAX_BODY, MAX_IMAGES = 64 * 1024, 16


def gray_images(n: int, seed: int = 0, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size), dtype=np.uint8)


def as_plain(predictions) -> list[list[tuple[str, float]]]:
    return [[(p.label, p.probability) for p in row] for row in predictions]


def from_json(answer: dict) -> list[list[tuple[str, float]]]:
    return [[(p["label"], p["probability"]) for p in row] for row in answer["predictions"]]


def assert_same(got, want) -> None:
    assert [[label for label, _ in row] for row in got] == [[label for label, _ in row] for row in want]
    np.testing.assert_allclose([[p for _, p in row] for row in got], [[p for _, p in row] for row in want], atol=1e-5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """uvicorn serving a small model in a thread, on a socket bound to a free loopback port."""
    model = linear_model(tmp_path_factory.mktemp("server") / "model.onnx", classes=4)
    classifier = OnnxClassifier(model.path)
    config = ServerConfig(max_batch_size=64, max_wait_ms=100, max_body_bytes=MAX_BODY, max_images=MAX_IMAGES, top_k=3,
                          max_concurrent_decodes=2, max_image_bytes=32 << 20)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(classifier, config), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client, classifier
    uv.should_exit = True
    thread.join(10)
    sock.close()


def test_health_and_metadata(server):
    client, classifier = server
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["class_names"] == classifier.class_names and meta["input_size"] == 8 and meta["task"] == "multiclass"
    assert meta["spec_hash"] == "test" and meta["precision"] == "fp32"


def test_predictions_equal_onnx_classifier(server):
    client, classifier = server
    batch = gray_images(3, seed=1)
    want = as_plain(classifier.predict(list(batch), top_k=3))
    # multipart upload of several files
    files = [("file", (f"{i}.png", png_bytes(image), "image/png")) for i, image in enumerate(batch)]
    answer = client.post("/predict", files=files)
    assert answer.status_code == 200, answer.text
    assert_same(from_json(answer.json()), want)
    # raw image body, top_k from the query
    answer = client.post("/predict?top_k=2", content=png_bytes(batch[0]), headers={"content-type": "image/png"})
    assert_same(from_json(answer.json()), [want[0][:2]])
    # JSON: uint8 N x H x W x C batch and one float H x W image
    answer = client.post("/predict", json={"inputs": batch[..., None].tolist(), "dtype": "uint8"})
    assert_same(from_json(answer.json()), want)
    answer = client.post("/predict", json={"inputs": (batch[2] / 255.0).tolist()})
    assert_same(from_json(answer.json()), want[2:])


def test_concurrent_requests_are_batched(server):
    client, classifier = server
    before = client.get("/metrics").json()["batching"]
    batch = gray_images(16, seed=2)
    start = threading.Barrier(len(batch))

    def one(image: np.ndarray) -> dict:
        start.wait()  # release every request at once
        return client.post("/predict", content=png_bytes(image), headers={"content-type": "image/png"}).json()

    with ThreadPoolExecutor(len(batch)) as pool:
        answers = list(pool.map(one, batch))
    # each request got its own rows back out of the shared batch
    for image, answer in zip(batch, answers, strict=True):
        assert_same(from_json(answer), as_plain(classifier.predict(image, top_k=3)))
    metrics = client.get("/metrics").json()
    assert metrics["in_flight"] == 0 and metrics["predict_latency_ms"]["window"] >= 16
    assert 0 < metrics["predict_latency_ms"]["p50"] <= metrics["predict_latency_ms"]["p99"]
    after = metrics["batching"]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 16
    assert batches < requests and after["max_batch_requests"] > 1  # several requests shared one onnxruntime call
    assert sum(int(k) * v for k, v in after["requests_per_batch"].items()) == after["requests"]
    assert 1 <= metrics["decodes"]["peak_running"] <= metrics["decodes"]["slots"] == 2


BAD = bad_requests(1, 8, MAX_BODY, MAX_IMAGES)


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_bad_input_is_refused_and_the_server_keeps_serving(server, case):
    """Every malformed or hostile request gets its 4xx and message over real HTTP (issue 15: 40 of 160 got 500)."""
    client, classifier = server
    before = client.get("/metrics").json()
    if "content-length" in case.args.get("headers", {}):  # a length httpx would refuse to send: write it by hand
        connection = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=30)
        connection.request(case.method, case.path, body=case.args["content"], headers=case.args["headers"])
        response = connection.getresponse()
        status, detail = response.status, json.loads(response.read())["detail"]
        connection.close()
    else:
        answer = client.request(case.method, case.path, params=case.params, **case.args)
        status, detail = answer.status_code, answer.json()["detail"]
    assert status == case.status, (case.name, detail)
    assert case.message in (detail if isinstance(detail, str) else json.dumps(detail)), detail
    after = client.get("/metrics").json()
    assert after["errors_4xx"] == before["errors_4xx"] + 1 and after["errors_5xx"] == 0
    image = gray_images(1, seed=7)[0]
    good = client.post("/predict", json={"inputs": image.tolist(), "dtype": "uint8"})
    assert good.status_code == 200
    assert_same(from_json(good.json()), as_plain(classifier.predict(image, top_k=3)))


def test_chunked_body_over_the_limit_is_refused_while_reading(server):
    client, _ = server
    chunks = (bytes(4096) for _ in range(MAX_BODY // 4096 + 2))  # no Content-Length: checked as the body streams in
    answer = client.post("/predict", content=chunks, headers={"content-type": "application/octet-stream"})
    assert answer.status_code == 413 and "byte limit" in answer.json()["detail"]
    assert client.get("/health").status_code == 200


def test_a_client_that_disconnects_mid_body_is_counted_not_logged(server):
    """Issue 15, defect 11: a disconnect was logged as a traceback and counted as a 5xx."""
    client, _ = server
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        before = client.get("/metrics").json()["client_disconnects"]
        with socket.create_connection((client.base_url.host, client.base_url.port)) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 50000\r\n\r\n" + bytes(1000))  # then gone, 49,000 bytes short
        deadline = time.monotonic() + 30
        while (metrics := client.get("/metrics").json())["client_disconnects"] == before:
            assert time.monotonic() < deadline, "the disconnect was not counted"
            time.sleep(0.05)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert metrics["client_disconnects"] == before + 1 and metrics["errors_5xx"] == 0 and metrics["in_flight"] == 0
    assert not errors, [record.getMessage() for record in errors]


def test_only_small_images_decode_on_the_event_loop():
    """A few-KB file can decode to millions of pixels: the header's pixel count, not the file size, decides."""
    small = png_bytes(gray_images(1)[0])
    huge = png_bytes(np.zeros((3000, 3000), dtype=np.uint8))  # 9M pixels in a few KB
    assert len(huge) < 64 * 1024
    assert [h.pixels for h in inline_headers([small, small])] == [64, 64]
    assert not inline_headers([huge]) and not inline_headers([small, huge])
    assert not inline_headers([b"not an image"])  # unreadable: the decoder reports it, off the loop


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_binds_loopback_and_answers(tmp_path):
    model = linear_model(tmp_path / "model.onnx", classes=4)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "compressor", "serve", str(model.path), "--port", str(port), "--max-wait-ms", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COMPRESSOR_QUIET": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "compressor serve did not start"
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            image = gray_images(1, seed=3)[0]
            answer = client.post("/predict", files={"file": ("x.png", png_bytes(image), "image/png")})
            want = as_plain(OnnxClassifier(model.path).predict(image, top_k=5))
            assert_same(from_json(answer.json()), want)
            assert json.loads(client.get("/metrics").content)["batching"]["max_wait_ms"] == 1
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}" in output  # the default host is loopback
