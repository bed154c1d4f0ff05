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
    ``GET /metrics``   responses by route (the application's routes; any other path counts as ``other``) and
                       status, client disconnects, requests in flight, server-side ``/predict`` latency percentiles
                       (latest 2048), batches and their sizes, queue wait and inference time, decodes running and
                       waiting, the memory limits and the resident memory. JSON by default; the Prometheus text
                       format with ``?format=prometheus`` or an ``Accept`` header naming ``text/plain`` or
                       ``application/openmetrics-text`` (as Prometheus sends).

Bad input (empty body, over the size limit, unsupported content type, not an image, an image or JSON body that would
take more than ``max_image_bytes`` to decode, JSON nested too deep, wrong shape, dtype or range, too many images)
is answered with a 4xx status and ``{"detail": message}``; the server keeps serving. Memory: at most
``max_concurrent_decodes`` decodes run at once, each within ``max_image_bytes`` (see ``compressor.export.limits``),
and freed memory goes back to the system (``serve``). A client that disconnects is counted, not logged as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from .batching import MicroBatcher
from .limits import DecodeSlots, OverLimit, decode_within, json_batch, return_freed_memory_to_os
from .preprocess import ImageHeader, InputError, image_header
from .runtime import OnnxClassifier
from .server_metrics import PROMETHEUS_CONTENT_TYPE, Counters, prometheus_text, resident_bytes

INLINE_DECODE_BYTES = 64 * 1024  # bodies up to this size are decoded on the event loop ...
INLINE_DECODE_PIXELS = 512 * 512  # ... when their images also have at most this many pixels each


class ServerConfig:
    """Limits and batching settings of the server.

    Args:
        max_batch_size: most images per onnxruntime call.
        max_wait_ms: how long the batcher waits for more requests after the first.
        max_body_bytes: largest accepted request body (413 beyond).
        max_images: most images in one request (413 beyond).
        top_k: classes returned per image when the request does not say.
        max_concurrent_decodes: most image decodes and JSON parses running at once (others wait for a slot).
        max_image_bytes: most memory one decode may take, estimated from the image header (width x height x
            (decoded bytes per pixel + 4) + 4 MiB) or from the JSON body before parsing (413 beyond). Decoding
            holds at most ``max_concurrent_decodes x max_image_bytes`` at once.
    """

    def __init__(self, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_body_bytes: int = 8 << 20,
                 max_images: int = 256, top_k: int = 5, max_concurrent_decodes: int = 4,
                 max_image_bytes: int = 128 << 20):
        if min(max_body_bytes, max_images, top_k, max_concurrent_decodes, max_image_bytes) < 1:
            raise ValueError("max_body_bytes, max_images, top_k, max_concurrent_decodes and max_image_bytes must be "
                             "positive")
        self.max_batch_size, self.max_wait_ms = max_batch_size, max_wait_ms
        self.max_body_bytes, self.max_images, self.top_k = max_body_bytes, max_images, top_k
        self.max_concurrent_decodes, self.max_image_bytes = max_concurrent_decodes, max_image_bytes

    def limits(self) -> dict[str, int]:
        """The request limits, JSON-ready."""
        return {"max_body_bytes": self.max_body_bytes, "max_images": self.max_images,
                "max_concurrent_decodes": self.max_concurrent_decodes, "max_image_bytes": self.max_image_bytes}


class _CountResponses:
    """Pure ASGI middleware counting responses by route and status code (lighter than ``@app.middleware``, which
    runs every request through an extra task group). A client that disconnected while its body was being read is
    counted as a disconnect: no response is sent to nobody, nothing is logged."""

    def __init__(self, app, counters: Counters):
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
        except ClientDisconnect:
            self.counters.disconnected()
            return
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


def inline_headers(images: list[bytes]) -> list[ImageHeader] | None:
    """The headers of encoded ``images`` when they are small enough to decode on the event loop (few bytes AND few
    pixels each: a tiny file can hold a huge, highly compressible image), else None (decode on a worker thread)."""
    if sum(map(len, images)) > INLINE_DECODE_BYTES:
        return None
    headers = [image_header(data) for data in images]
    if all(header is not None and header.pixels <= INLINE_DECODE_PIXELS for header in headers):
        return headers
    return None


def create_app(classifier: OnnxClassifier, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``classifier`` through a micro-batcher (started with the app)."""
    config = config or ServerConfig()
    meta = classifier.metadata
    counters = Counters()
    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["slots"] = DecodeSlots(config.max_concurrent_decodes)
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

    @app.get("/metrics", response_model=None)
    async def metrics(request: Request, fmt: Literal["json", "prometheus"] | None = Query(None, alias="format")
                      ) -> dict | PlainTextResponse:
        batcher, slots = state.get("batcher"), state.get("slots")
        snapshot = {**counters.snapshot(),
                    "batching": {"max_batch_size": config.max_batch_size, "max_wait_ms": config.max_wait_ms,
                                 **(batcher.stats.snapshot() if batcher else {})},
                    "decodes": (slots or DecodeSlots(config.max_concurrent_decodes)).snapshot(),
                    "limits": config.limits(), "resident_memory_bytes": resident_bytes()}
        accept = request.headers.get("accept", "")
        if fmt == "prometheus" or (fmt is None and ("text/plain" in accept or "openmetrics" in accept)):
            return PlainTextResponse(prometheus_text(snapshot), media_type=PROMETHEUS_CONTENT_TYPE)
        return snapshot

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
        channels, size, limit, fmt = meta.input_channels, meta.input_size, config.max_image_bytes, meta.pixel_format
        slots = state.get("slots")
        if slots is None:
            raise HTTPException(503, "the server is not running (its lifespan has not started)")
        try:
            multipart = content_type == "multipart/form-data"
            if content_type == "application/json":
                batch = await slots.run(len(body) <= INLINE_DECODE_BYTES,
                                        lambda: json_batch(body, channels, size, limit, fmt))
            elif multipart or content_type.startswith("image/") or content_type == "application/octet-stream":
                files = await _multipart_files(request, body) if multipart else [("body", body)]
                if len(files) > config.max_images:
                    raise HTTPException(413, f"{len(files)} images in one request; the limit is {config.max_images}")
                headers = inline_headers([data for _, data in files]) or [None] * len(files)
                batch = await slots.run(headers[0] is not None, lambda: np.stack([
                    decode_within(data, channels, size, name, limit, header, fmt)
                    for (name, data), header in zip(files, headers, strict=True)]))
            else:
                raise HTTPException(415, f"unsupported content type {content_type[:100] or '(none)'!r}: use "
                                         "multipart/form-data, image/*, application/octet-stream or application/json")
        except OverLimit as exc:
            raise HTTPException(413, str(exc)) from None
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

    counters.routes = {route.path for route in app.routes}
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def quiet_client_errors() -> None:
    """Silence the per-request warnings of libraries about inputs the server refuses anyway (a hostile client
    could otherwise fill the log): python-multipart on a malformed body (answered 400), Pillow on images beyond
    its decompression-bomb threshold (refused by the server's own pixel and memory limits)."""
    from PIL import Image

    for name in ("python_multipart", "multipart"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def serve(model: str | Path | OnnxClassifier, host: str = "127.0.0.1", port: int = 8000,
          config: ServerConfig | None = None, providers: list[str] | None = None, log_level: str = "info") -> None:
    """Serve ``model`` (a path, or a loaded classifier) with uvicorn until interrupted (binds loopback unless told
    otherwise).

    Raises:
        FileNotFoundError: no such model file.
        ValueError: onnxruntime cannot load it, or it lacks compressor's metadata.
    """
    import uvicorn

    # No busy-waiting onnxruntime threads: they would take CPU from request parsing on the same cores.
    classifier = model if isinstance(model, OnnxClassifier) else OnnxClassifier(model, providers=providers, spin=False)
    return_freed_memory_to_os()  # a decoded image's memory goes back to the system once it is freed
    quiet_client_errors()
    uvicorn.run(create_app(classifier, config), host=host, port=port, log_level=log_level)
