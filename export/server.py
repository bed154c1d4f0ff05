"""HTTP server for an exported model: FastAPI + uvicorn, onnxruntime behind a dynamic micro-batcher.

Endpoints:
    ``POST /predict``  one or more images, answered with their top-k classes. Bodies:
        * ``multipart/form-data``: one or more file fields (each an encoded image: PNG, JPEG, ...);
        * ``image/*`` or ``application/octet-stream``: one encoded image as the raw body;
        * ``application/json``: ``{"inputs": array, "dtype": "float32" | "uint8"}`` where the array is one image
          (``H x W``, ``H x W x C`` or ``C x H x W``) or a batch (``N x C x H x W`` or ``N x H x W x C``) at the
          model's size; ``float32`` values lie in [0, 1] (default), ``uint8`` values are integers 0..255.
        Query ``top_k`` (default: the server's). Answer: ``{"predictions": [[{"label", "index", "probability"}]]}``.
    ``GET /health``    liveness (``{"status": "ok"}`` while the batcher runs).
    ``GET /metadata``  the model's metadata (classes, task, input shape, normalisation, spec hash, version, ...).
    ``GET /metrics``   request and error counts, requests in flight, server-side ``/predict`` latency percentiles
                       (latest 2048), batches and their sizes, queue wait and inference time.

Bad input (empty body, over the size limit, unsupported content type, not an image, wrong shape, dtype or
range, too many images) is answered with a 4xx status and ``{"detail": message}``; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import threading
import time
from collections import Counter, deque

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .batching import MicroBatcher
from .preprocess import InputError, decode_image, image_pixels, to_model_input
from .runtime import OnnxClassifier

JSON_DTYPES = ("float32", "uint8")
INLINE_DECODE_BYTES = 64 * 1024  # bodies up to this size are decoded on the event loop ...
INLINE_DECODE_PIXELS = 512 * 512  # ... when their images also have at most this many pixels each
LATENCY_WINDOW = 2048  # /metrics latency percentiles cover this many latest answered predictions


class ServerConfig:
    """Limits and batching settings of the server.

    Args:
        max_batch_size: most images per onnxruntime call.
        max_wait_ms: how long the batcher waits for more requests after the first.
        max_body_bytes: largest accepted request body (413 beyond).
        max_images: most images in one request (413 beyond).
        top_k: classes returned per image when the request does not say.
    """

    def __init__(self, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_body_bytes: int = 8 << 20,
                 max_images: int = 256, top_k: int = 5):
        if max_body_bytes < 1 or max_images < 1 or top_k < 1:
            raise ValueError("max_body_bytes, max_images and top_k must be positive")
        self.max_batch_size, self.max_wait_ms = max_batch_size, max_wait_ms
        self.max_body_bytes, self.max_images, self.top_k = max_body_bytes, max_images, top_k


class _Counters:
    """HTTP-level counters: responses by status code and per path, and ``/predict`` requests in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.status: Counter[int] = Counter()
        self.paths: Counter[str] = Counter()
        self.started = time.time()
        self.in_flight = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)  # seconds of the latest answered predictions

    def admit(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta

    def answered(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)

    def record(self, path: str, status: int) -> None:
        with self._lock:
            self.status[status] += 1
            self.paths[path] += 1

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "uptime_seconds": time.time() - self.started,
                "in_flight": self.in_flight,
                "responses": {str(k): v for k, v in sorted(self.status.items())},
                "requests_by_path": dict(sorted(self.paths.items())),
                "errors_4xx": sum(v for k, v in self.status.items() if 400 <= k < 500),
                "errors_5xx": sum(v for k, v in self.status.items() if k >= 500),
                "predict_latency_ms": _percentiles(list(self.latencies)),
            }


def _percentiles(seconds: list[float]) -> dict[str, float | int | None]:
    """p50 / p90 / p99 in milliseconds of server-side ``/predict`` handling times (read, decode, batch, answer)."""
    if not seconds:
        return {"window": 0, "p50": None, "p90": None, "p99": None}
    ms = np.asarray(seconds) * 1e3
    return {"window": len(ms), **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}}


class _CountResponses:
    """Pure ASGI middleware counting responses by status code and path (lighter than ``@app.middleware``,
    which runs every request through an extra task group)."""

    def __init__(self, app, counters: _Counters):
        self.app, self.counters = app, counters

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_and_count(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            self.counters.record(scope["path"], status["code"])


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past ``limit`` bytes, checked before and while reading."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPException(413, f"request body of {int(declared)} bytes exceeds the {limit} byte limit")
        except ValueError:
            raise HTTPException(400, "invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise HTTPException(400, "empty request body: send an image file, or JSON {\"inputs\": [...]}")
    return body


async def _multipart_files(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    """The uploaded files of a multipart body, in order, as ``(name, bytes)`` (the body size bounds their count)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay():
        yield body
        yield b""

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=len(body), max_fields=len(body),
                                     max_part_size=len(body)).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
    files = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((value.filename or key, await value.read()))
    await form.close()
    if not files:
        raise HTTPException(422, "multipart body has no file field: upload the image as a file (e.g. -F file=@x.png)")
    return files


def _json_batch(body: bytes, channels: int, size: int, pixel_format=None) -> np.ndarray:
    """``{"inputs": ..., "dtype": ...}`` as a checked ``float32 [N, C, H, W]`` batch (no resizing)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InputError('JSON body must be an object {"inputs": array, "dtype": "float32" | "uint8"}')
    unknown = set(payload) - {"inputs", "dtype"}
    if unknown:
        raise InputError(f"unknown JSON field(s): {', '.join(sorted(unknown))} (allowed: inputs, dtype)")
    dtype = payload.get("dtype", "float32")
    if dtype not in JSON_DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported (use one of {', '.join(JSON_DTYPES)})")
    try:
        array = np.asarray(payload["inputs"], dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError("inputs must be a rectangular nested array of numbers (wrong shape or non-numbers)") from None
    if array.ndim not in (2, 3, 4):
        raise InputError(f"inputs has shape {array.shape}: expected one image (2-D or 3-D) or a batch (4-D)")
    if dtype == "uint8":
        if not np.isfinite(array).all() or (array != np.rint(array)).any() or array.min() < 0 or array.max() > 255:
            raise InputError("dtype uint8 needs integer values in 0..255")
        array = array.astype(np.uint8)
    else:
        array = array.astype(np.float32)
    return to_model_input(array, channels, size, resize=False, name="inputs", pixel_format=pixel_format)


def decodes_inline(images: list[bytes]) -> bool:
    """Whether encoded ``images`` are small enough to decode on the event loop: few bytes AND few pixels each (a
    tiny file can hold a huge, highly compressible image; the header says how many pixels it decodes to)."""
    return sum(map(len, images)) <= INLINE_DECODE_BYTES and all(
        (image_pixels(data) or INLINE_DECODE_PIXELS + 1) <= INLINE_DECODE_PIXELS for data in images)


async def _offload(inline: bool, work):
    """Run ``work()`` inline or on the thread pool: small inputs decode faster inline than the hop to a worker thread
    costs (thread hand-over and GIL contention dominate for tiny images); large ones must not block the loop."""
    if inline:
        return work()
    return await run_in_threadpool(work)


def create_app(classifier: OnnxClassifier, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``classifier`` through a micro-batcher (started with the app)."""
    config = config or ServerConfig()
    meta = classifier.metadata
    counters = _Counters()
    state: dict[str, MicroBatcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = MicroBatcher(classifier.run, config.max_batch_size, config.max_wait_ms,
                                        in_flight=lambda: counters.in_flight)
        try:
            yield
        finally:
            state.pop("batcher").close()

    app = FastAPI(title="compressor model server", version=str(meta.raw.get("compressor_version", "")),
                  lifespan=lifespan)

    app.add_middleware(_CountResponses, counters=counters)

    @app.get("/health")
    async def health() -> dict:
        batcher = state.get("batcher")
        if batcher is None or not batcher.alive:
            raise HTTPException(503, "the batching worker is not running")
        return {"status": "ok", "model": classifier.path.name, "providers": classifier.providers}

    @app.get("/metadata")
    async def metadata() -> dict:
        return {"model": classifier.path.name, "providers": classifier.providers, **meta.as_json()}

    @app.get("/metrics")
    async def metrics() -> dict:
        batcher = state.get("batcher")
        return {**counters.snapshot(), "batching": {"max_batch_size": config.max_batch_size,
                                                    "max_wait_ms": config.max_wait_ms,
                                                    **(batcher.stats.snapshot() if batcher else {})}}

    @app.post("/predict")
    async def predict(request: Request, top_k: int | None = Query(None, ge=1, le=10_000)) -> dict:
        counters.admit(+1)
        start = time.perf_counter()
        try:
            answer = await _predict(request, top_k)
            counters.answered(time.perf_counter() - start)
            return answer
        finally:
            counters.admit(-1)

    async def _predict(request: Request, top_k: int | None) -> dict:
        body = await _read_body(request, config.max_body_bytes)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        channels, size, fmt = meta.input_channels, meta.input_size, meta.pixel_format
        try:
            if content_type == "multipart/form-data":
                files = await _multipart_files(request, body)
                if len(files) > config.max_images:
                    raise HTTPException(413, f"{len(files)} images in one request; the limit is {config.max_images}")
                batch = await _offload(
                    decodes_inline([data for _, data in files]),
                    lambda: np.stack([decode_image(data, channels, size, name, fmt) for name, data in files]))
            elif content_type.startswith("image/") or content_type == "application/octet-stream":
                image = await _offload(decodes_inline([body]), lambda: decode_image(body, channels, size, "body", fmt))
                batch = image[None]
            elif content_type == "application/json":
                batch = await _offload(len(body) <= INLINE_DECODE_BYTES, lambda: _json_batch(body, channels, size, fmt))
            else:
                raise HTTPException(415, f"unsupported content type {content_type or '(none)'!r}: use "
                                         "multipart/form-data, image/*, application/octet-stream or application/json")
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        if len(batch) > config.max_images:
            raise HTTPException(413, f"{len(batch)} images in one request; the limit is {config.max_images}")
        batcher = state.get("batcher")
        if batcher is None:
            raise HTTPException(503, "the server is shutting down")
        logits = await asyncio.wrap_future(batcher.submit(batch))
        predictions = classifier.top_k(logits, top_k or config.top_k)
        return {"model": classifier.path.name, "predictions": [[p.as_dict() for p in row] for row in predictions]}

    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000, config: ServerConfig | None = None,
          providers: list[str] | None = None, log_level: str = "info") -> None:
    """Load the model and serve it with uvicorn until interrupted (binds loopback unless told otherwise)."""
    import uvicorn

    # No busy-waiting onnxruntime threads: they would take CPU from request parsing on the same cores.
    classifier = OnnxClassifier(model_path, providers=providers, spin=False)
    uvicorn.run(create_app(classifier, config), host=host, port=port, log_level=log_level)
