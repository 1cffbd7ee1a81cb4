"""`rankiqa serve`: photos scored over HTTP (Starlette on uvicorn; the ``serve`` extra).

    POST /score    one photo as the raw body (any Content-Type but a form), or several as
                   multipart/form-data files; JSON back: each photo's score, what the scores
                   mean, the model and the engine
    GET  /healthz  200 while the model serves (a readiness probe), 503 once it stops
    GET  /models   the model served: its name, network, views, scale and engine
    GET  /metrics  Prometheus text: requests by code, photos, batch sizes, latency, queue

Uploads are decoded and their views placed in threads, then scored together in batches across
requests (`rankiqa.serve.batching.Batcher`): a photo gets `predict`'s score for the same bytes.
Every error is one JSON object ``{"error": ...}`` with its status: 400 nothing to score, 413
over ``max_upload`` bytes, 422 not a readable image, 503 the queue is full (with Retry-After).
"""

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import importlib
import signal
import socket
import threading
import time

from rankiqa.data import images as images_lib
from rankiqa.errors import InputError, RankiqaError
from rankiqa.serve import batching, scoring


@dataclasses.dataclass(frozen=True)
class Limits:
    max_batch: int = 16  # photos per network call: 32 views at the built-in models' two
    max_wait_ms: float = 5.0  # what a batch waits for photos still being decoded
    queue_size: int = 256  # photos waiting at most; more are refused (503), never left to hang
    max_upload: int = 32 * 2**20  # bytes per request
    max_files: int = 64  # photos per request

    def __post_init__(self):
        for key in ("max_batch", "queue_size", "max_upload", "max_files"):
            if getattr(self, key) < 1:
                raise InputError(f"serve: {key} must be >= 1, got {getattr(self, key)}")
        if self.max_wait_ms < 0:
            raise InputError(f"serve: max_wait_ms must be >= 0, got {self.max_wait_ms}")


def require_serve():
    """Starlette, uvicorn, python-multipart and prometheus_client, or one line saying how."""
    try:
        for module in ("python_multipart", "starlette"):  # Starlette's form parser; the app
            importlib.import_module(module)
        import prometheus_client
        import uvicorn
    except ImportError as e:
        raise RankiqaError(f"rankiqa serve needs the serve extra ({e.name} is missing): pip "
                           "install 'rankiqa[serve]'") from None
    return prometheus_client, uvicorn


class TooLarge(RankiqaError):
    pass


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, batcher):
        prometheus_client, _ = require_serve()
        self.prometheus = prometheus_client
        self.registry = registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "rankiqa_requests", "HTTP requests by path and status", ["path", "code"],
            registry=registry)
        self.photos = prometheus_client.Counter("rankiqa_photos_scored", "photos scored",
                                                registry=registry)
        self.disconnects = prometheus_client.Counter(
            "rankiqa_client_disconnects", "uploads the client abandoned", registry=registry)
        self.latency = prometheus_client.Histogram(
            "rankiqa_request_latency_seconds", "POST /score, arrival to answer",
            buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=registry)
        self.batch = prometheus_client.Histogram(
            "rankiqa_batch_photos", "photos per network call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry)
        queue = prometheus_client.Gauge("rankiqa_queue_photos", "photos waiting to be scored",
                                        registry=registry)
        queue.set_function(batcher.depth)

    def on_batch(self, photos, seconds):
        self.batch.observe(photos)
        self.photos.inc(photos)

    def text(self):
        return self.prometheus.generate_latest(self.registry)


def model_info(model):
    return {"model": model.name, "net": model.net, "views": model.views.describe(),
            "engine": model.engine, **model.scorer.model.scale.as_dict()}


def create_app(model, limits=Limits()):
    """The ASGI app serving `model` (a loaded `rankiqa.serve.predict.Model`); the end of its
    lifespan scores what is queued, then closes the model."""
    require_serve()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    service = Service(model, limits)
    routes = [Route("/score", service.score, methods=["POST"]),
              Route("/healthz", service.healthz), Route("/models", service.models),
              Route("/metrics", service.metrics_text)]
    app = Starlette(routes=routes, exception_handlers={HTTPException: service.http_error},
                    lifespan=service.lifespan)
    app.state.service = service
    return app


class Service:
    """The handlers of `create_app`'s routes, around one `batching.Batcher`."""

    def __init__(self, model, limits):
        self.model, self.limits, self.serving = model, limits, True
        self.batcher = batching.Batcher(model.scorer, limits.max_batch,
                                        limits.max_wait_ms / 1000, limits.queue_size)
        self.metrics = Metrics(self.batcher)
        self.batcher.on_batch = self.metrics.on_batch
        self.decoding = concurrent.futures.ThreadPoolExecutor(scoring.DECODE_THREADS,
                                                              "rankiqa-decode")
        self.info = model_info(model)

    def answer(self, path, code, body, headers=None):
        from starlette.responses import JSONResponse

        self.metrics.requests.labels(path, str(code)).inc()
        return JSONResponse(body, code, headers)

    async def score(self, request):
        started = time.monotonic()
        try:
            uploads = await read_uploads(request, self.limits)
            scores = await score_uploads(uploads, self.model.views, self.batcher,
                                         self.decoding)
        except ClientGone:
            from starlette.responses import Response

            self.metrics.disconnects.inc()
            return Response(status_code=499)  # nobody reads it; nginx's code, for the log
        except batching.Busy as e:
            return self.answer("/score", 503, {"error": str(e)},
                               {"Retry-After": str(e.retry_after)})
        except Refused as e:
            return self.answer("/score", e.code, {"error": str(e)})
        except RankiqaError as e:
            return self.answer("/score", 500, {"error": str(e)})
        self.metrics.latency.observe(time.monotonic() - started)
        body = {**self.info, "scores": [{"name": name, "score": value}
                                        for (name, _), value in zip(uploads, scores)]}
        if len(scores) == 1:
            body["score"] = scores[0]
        return self.answer("/score", 200, body)

    async def healthz(self, request):
        ok = self.serving and self.batcher.thread.is_alive()
        return self.answer("/healthz", 200 if ok else 503,
                           {"status": "ok" if ok else "stopping", "model": self.model.name})

    async def models(self, request):
        return self.answer("/models", 200, {"models": [self.info]})

    async def metrics_text(self, request):
        from starlette.responses import Response

        self.metrics.requests.labels("/metrics", "200").inc()
        return Response(self.metrics.text(), media_type="text/plain; version=0.0.4")

    async def http_error(self, request, exc):
        path = request.url.path if exc.status_code != 404 else "other"  # bounded labels
        return self.answer(path, exc.status_code, {
            "error": f"{request.method} {request.url.path}: {exc.detail}; the service answers "
                     "POST /score, GET /healthz, /models, /metrics"})

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        yield
        self.serving = False
        self.batcher.close()  # what was accepted is answered
        self.decoding.shutdown()
        self.model.close()


class Refused(RankiqaError):
    """A request the service cannot score; `code` is its HTTP status."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ClientGone(Exception):
    pass


async def read_body(request, limit):
    """The body's bytes, refused (413) past `limit` before more is read."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the upload is {int(declared):,} bytes, over the limit of "
                           f"{limit:,} (rankiqa serve --max-upload-mb)")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"the upload is over the limit of {limit:,} bytes "
                                   "(rankiqa serve --max-upload-mb)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


async def read_uploads(request, limits):
    """``[(name, bytes)]``: the raw body as one photo (named by ``?name=``, else "upload"), or
    each file of a multipart form (named by its file name)."""
    body = await read_body(request, limits.max_upload)
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        uploads = await form_files(request, body, limits)
    elif kind.startswith("application/x-www-form-urlencoded"):
        raise Refused(415, "a urlencoded form holds no file: send the photo's bytes as the "
                           "body, or files in multipart/form-data")
    else:
        uploads = [(request.query_params.get("name", "upload"), body)] if body else []
    if not uploads:
        raise Refused(400, "nothing to score: send a photo's bytes as the body (curl "
                           "--data-binary @photo.jpg) or files in multipart/form-data (curl "
                           "-F image=@photo.jpg)")
    return uploads


async def form_files(request, body, limits):
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=limits.max_files,
                                     max_part_size=limits.max_upload).parse()
    except MultiPartException as e:
        raise Refused(422 if "Too many" not in str(e) else 413,
                      f"the multipart form cannot be read: {e.message}") from None
    files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
             if isinstance(value, UploadFile)]
    await form.close()
    return files


async def score_uploads(uploads, views, batcher, decoding):
    """Each upload's score, in order: decoded in `decoding`'s threads, scored by `batcher`."""
    loop = asyncio.get_running_loop()
    batcher.expect(len(uploads))  # a batch about to run waits for these
    try:
        placed = await asyncio.gather(*[
            loop.run_in_executor(decoding, batching.place_upload, data, name, views)
            for name, data in uploads])
        futures = submit_all(batcher, placed)
    except images_lib.BadImageError as e:
        raise Refused(422, str(e)) from None
    finally:
        batcher.expect(-len(uploads))
    return list(await asyncio.gather(*[asyncio.wrap_future(f) for f in futures]))


def submit_all(batcher, placed):
    """Each photo's future, or none: `batching.Busy` cancels those already queued."""
    futures = []
    try:
        for views_of_one in placed:
            futures.append(batcher.submit(views_of_one))
    except batching.Busy:
        for future in futures:
            future.cancel()  # a part of a request is not worth scoring
        raise
    return futures


def bind(host, port):
    """A listening socket on `host`:`port` (0: a free one) and the service's URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only for sockets that say TCP, and with
    # Nagle on, an answer written in two parts waits 40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RankiqaError(f"cannot listen on {host}:{port}: {e.strerror}; choose another "
                           "--port or --host") from None
    sock.listen(2048)
    where = sock.getsockname()
    shown = f"[{where[0]}]" if family == socket.AF_INET6 else where[0]
    return sock, f"http://{shown}:{where[1]}"


def server(app, sock):
    """A uvicorn server for `app` on `sock` (``.run(sockets=[sock])`` blocks until SIGINT or
    SIGTERM, or until ``should_exit`` is set from another thread)."""
    _, uvicorn = require_serve()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=30)
    return uvicorn.Server(config)


def serve_until_stopped(app, sock):
    """Serves `app` on `sock` in this (main) thread until SIGINT or SIGTERM, then answers what
    it accepted and returns."""
    # uvicorn raises the signal again once it stopped gracefully, under the handlers it found:
    # handlers that do nothing let the command end normally, with its last line and status 0
    found = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server(app, sock).run(sockets=[sock])
    finally:
        for sig, handler in found.items():
            signal.signal(sig, handler)


class Running:
    """`app` served on `sock` in a thread (tests, notebooks): ``with Running(app, sock):``."""

    def __init__(self, app, sock):
        self.server, self.sock = server(app, sock), sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RankiqaError("the service stopped while starting")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join()
        self.sock.close()
