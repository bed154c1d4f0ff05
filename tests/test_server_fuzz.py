"""Property-based fuzzing of the server's request parsing (Hypothesis, in-process through FastAPI's TestClient).

For any body (random JSON documents, JSON-shaped byte soup, raw bytes and mutated PNGs under every content type,
multipart bodies with random parts and boundaries) and any query, the answer is a 200 with predictions or one of
the documented 4xx (400, 405, 413, 415, 422) with a ``detail``: never a 5xx, and never an exception escaping the
app (the client re-raises them, so a traceback fails the test). Each test is bounded by its example count; the
whole file takes seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from compressor.export import OnnxClassifier
from compressor.export.server import ServerConfig, create_app
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bad_requests import png_bytes, png_header
from tests.deploy_models import linear_model

DOCUMENTED_4XX = {400, 405, 413, 415, 422}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SIZE = 8
CONTENT_TYPES = ["application/json", "image/png", "image/jpeg", "application/octet-stream", "multipart/form-data",
                 "multipart/form-data; boundary=b", "text/plain", "", "application/json; charset=utf-16",
                 "image/", "IMAGE/PNG", "multipart/mixed; boundary=b"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    model = linear_model(tmp_path_factory.mktemp("fuzz") / "model.onnx", classes=4)
    config = ServerConfig(max_body_bytes=64 * 1024, max_images=8, max_image_bytes=16 << 20, max_concurrent_decodes=2)
    with TestClient(create_app(OnnxClassifier(model.path), config)) as test_client:
        yield test_client


def check(answer) -> None:
    """A 200 with one prediction list per image, or a documented 4xx with a detail."""
    assert answer.status_code == 200 or answer.status_code in DOCUMENTED_4XX, (answer.status_code, answer.text)
    payload = answer.json()
    if answer.status_code == 200:
        assert payload["predictions"] and all(len(row) >= 1 for row in payload["predictions"])
    else:
        assert payload["detail"]


numbers = st.one_of(st.integers(-300, 300), st.integers(), st.floats(), st.sampled_from([0, 1, 255, 0.5, 1e-300]))
json_values = st.recursive(st.none() | st.booleans() | numbers | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3),
                           max_leaves=40)
images = st.builds(lambda shape, scale, seed: np.random.default_rng(seed).random(shape) * scale,
                   st.sampled_from([(SIZE, SIZE), (SIZE, SIZE, 1), (SIZE, SIZE, 3), (1, SIZE, SIZE), (3, SIZE, SIZE),
                                    (2, 1, SIZE, SIZE), (2, SIZE, SIZE, 3), (SIZE, SIZE - 1), (1, 1, 1, 1),
                                    (0, SIZE, SIZE), (SIZE, SIZE, 2)]),
                   st.sampled_from([1.0, 255.0, -1.0, 1e39]), st.integers(0, 2**16))


@FUZZ
@given(inputs=st.one_of(json_values, images.map(lambda a: a.tolist()),
                        images.map(lambda a: np.rint(np.clip(a, -1e6, 1e6)).astype(int).tolist())),
       dtype=st.one_of(st.none(), st.sampled_from(["float32", "uint8", "float64", ""]), json_values),
       extra=st.dictionaries(st.sampled_from(["inputs", "dtype", "x", ""]), json_values, max_size=2))
def test_json_bodies(client, inputs, dtype, extra):
    document = {**extra, "inputs": inputs} if dtype is None else {**extra, "inputs": inputs, "dtype": dtype}
    body = json.dumps(document, allow_nan=True).encode()
    check(client.post("/predict", content=body, headers={"content-type": "application/json"}))


@FUZZ
@given(prefix=st.sampled_from([b"", b'{"inputs": ', b'{"dtype": "uint8", "inputs": ', b'{"inputs": [[0, 1], ']),
       opener=st.sampled_from([b"[", b'{"a": ', b'[{"inputs": ', b"[0, "]),
       depth=st.one_of(st.integers(0, 8), st.integers(0, 6000)),
       tokens=st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b",", b":", b'"inputs"', b'"dtype"', b'"uint8"',
                                        b"0", b"255", b"0.5", b"-1", b"1e999", b"NaN", b"true", b"null",
                                        b'"\\ud800"', b" ", b"\xff", b"9" * 50]), max_size=60),
       closed=st.floats(0.0, 1.0))
def test_json_shaped_byte_soup(client, prefix, opener, depth, tokens, closed):
    """Nests of any depth (well past Python's recursion limit) around token soup, closed or not."""
    closer = b"]" if opener.startswith(b"[") else b"}"
    body = prefix + opener * depth + b"".join(tokens) + closer * int(depth * closed)
    check(client.post("/predict", content=body, headers={"content-type": "application/json"}))


png = png_bytes(np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE))


@FUZZ
@given(base=st.sampled_from([png, png_header(7900, 7900), png_header(5, 3, 8, 0), png_header(2**31 - 1, 1, 1, 0),
                             b""]),
       edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 500), tail=st.binary(max_size=64),
       content_type=st.sampled_from(CONTENT_TYPES), top_k=st.one_of(st.none(), st.integers(-5, 20_000)))
def test_raw_bytes_and_mutated_pngs(client, base, edits, cut, tail, content_type, top_k):
    body = bytearray(base[:cut] if cut else base)
    for position, value in edits:
        if position < len(body):
            body[position] = value
    headers = {"content-type": content_type} if content_type else {}
    params = {} if top_k is None else {"top_k": top_k}
    check(client.post("/predict", content=bytes(body) + tail, headers=headers, params=params))


part_headers = st.lists(st.sampled_from([b'Content-Disposition: form-data; name="file"; filename="a.png"',
                                         b'Content-Disposition: form-data; name="note"',
                                         b"Content-Disposition: form-data", b"Content-Type: image/png",
                                         b'Content-Disposition: form-data; name="f"; filename="\xff.png"',
                                         b"X-Junk: \x00\x01", b"no colon here"]), max_size=3)
part_bodies = st.one_of(st.just(png), st.binary(max_size=80), st.just(png[:50]), st.just(png_header(7900, 7900)))


@FUZZ
@given(boundary=st.sampled_from([b"b", b"XyZ", b"-", b"a" * 80]),
       parts=st.lists(st.tuples(part_headers, part_bodies), max_size=4),
       closing=st.sampled_from([b"--\r\n", b"--", b"", b"\r\n"]), declared=st.sampled_from([None, b"other"]),
       noise=st.binary(max_size=16))
def test_multipart_bodies(client, boundary, parts, closing, declared, noise):
    body = noise
    for headers, content in parts:
        body += b"--" + boundary + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + content + b"\r\n"
    body += b"--" + boundary + closing
    name = declared or boundary  # the declared boundary may differ from the one used
    check(client.post("/predict", content=body,
                      headers={"content-type": "multipart/form-data; boundary=" + name.decode()}))
