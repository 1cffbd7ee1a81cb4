"""rankiqa serve: scores over HTTP equal predict's, batching across requests, clear errors."""

import concurrent.futures
import csv
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from rankiqa.cli import main
from rankiqa.serve import batching, predict, service


# predict's CSV rounds to 6 decimals, and a float32 score's last bits move with the batch
TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def photos(photo_dir):
    return sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))


@pytest.fixture(scope="module")
def expected(stage_one, photos):
    """predict's scores of the photos, as its CSV gives them."""
    result = CliRunner().invoke(main, ["predict", *photos, "--model", stage_one,
                                       "--engine", "tensorflow"])
    assert result.exit_code == 0, result.output
    return {row[0]: float(row[1]) for row in list(csv.reader(result.stdout.splitlines()))[1:]}


def start(stage_one, **limits):
    model = predict.load_model(stage_one, engine="tensorflow")
    sock, url = service.bind("127.0.0.1", 0)
    return service.Running(service.create_app(model, service.Limits(**limits)), sock), url


def request(url, method, path, body=None, headers=None):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), data
    finally:
        connection.close()


def metric(text, name):
    """A sample's value from Prometheus text."""
    line, = [line for line in text.decode().splitlines() if line.split(" ")[0] == name]
    return float(line.split(" ")[1])


def multipart(files):
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename="
             f"\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + data
             + b"\r\n" for name, data in files]
    return (b"".join(parts) + f"--{boundary}--\r\n".encode(),
            {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_scores_equal_predicts_alone_and_in_concurrent_batches(stage_one, photos, expected):
    running, url = start(stage_one, max_batch=4, max_wait_ms=50)
    with running:
        status, _, data = request(url, "POST", "/score?name=one.jpg", open(photos[0], "rb").read(),
                                  {"Content-Type": "image/jpeg"})
        assert status == 200, data
        body = json.loads(data)
        assert body["scores"] == [{"name": "one.jpg", "score": body["score"]}]
        assert body["score"] == pytest.approx(expected[photos[0]], abs=TOLERANCE)
        assert body["model"] == stage_one and body["engine"] == "tensorflow"
        assert body["higher_is_better"] is True and "score_scale" in body
        # many clients at once, each photo several times: batched, each answer its own photo's
        jobs = [photos[k % len(photos)] for k in range(4 * len(photos))]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: request(
                url, "POST", "/score", open(p, "rb").read()), jobs))
        for path, (status, _, data) in zip(jobs, answers):
            assert status == 200, data
            assert json.loads(data)["score"] == pytest.approx(expected[path], abs=TOLERANCE)
        # several photos in one multipart request, in order, named by their file names
        files = [(os.path.basename(p), open(p, "rb").read()) for p in photos[:3]]
        status, _, data = request(url, "POST", "/score", *multipart(files))
        assert status == 200, data
        scores = json.loads(data)["scores"]
        assert [s["name"] for s in scores] == [n for n, _ in files]
        assert [s["score"] for s in scores] == pytest.approx([expected[p] for p in photos[:3]],
                                                             abs=TOLERANCE)
        _, _, metrics = request(url, "GET", "/metrics")
        # answers leave at once: Nagle's algorithm would hold an answer's second part 40 ms
        # for the client's delayed ACK
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 200")
            accepted = [c.transport.get_extra_info("socket")
                        for c in running.server.server_state.connections]
            assert accepted and all(
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in accepted)
    batches, scored = (metric(metrics, n) for n in ("rankiqa_batch_photos_count",
                                                    "rankiqa_photos_scored_total"))
    assert scored == 1 + len(jobs) + 3
    assert batches < scored  # requests shared batches


def test_errors_are_one_json_line_with_their_status(stage_one, photos, tmp_path):
    running, url = start(stage_one, max_upload=200_000)
    with running:
        cases = {
            "not an image": (b"this is text", {}, 422, "upload: not a readable image"),
            "empty": (b"", {}, 400, "nothing to score"),
            "too large": (b"x" * 200_001, {}, 413, "over the limit of 200,000"),
            "form": (b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
                     "holds no file"),
        }
        for what, (body, headers, code, words) in cases.items():
            status, _, data = request(url, "POST", "/score", body, headers)
            assert status == code, what
            assert words in json.loads(data)["error"], what
        good = open(photos[0], "rb").read()
        status, _, data = request(url, "POST", "/score", *multipart(
            [("a.jpg", good), ("broken.jpg", good[:100])]))
        assert status == 422 and "broken.jpg" in json.loads(data)["error"]
        status, _, data = request(url, "GET", "/score")
        assert status == 405 and "POST /score" in json.loads(data)["error"]
        status, _, data = request(url, "GET", "/nowhere")
        assert status == 404 and "GET /healthz" in json.loads(data)["error"]
        status, _, data = request(url, "GET", "/healthz")
        assert status == 200 and json.loads(data)["status"] == "ok"
        status, _, data = request(url, "GET", "/models")
        assert json.loads(data)["models"][0]["model"] == stage_one
        # a client gone mid-upload: the service goes on
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                         + good[:1000])
        status, _, _ = request(url, "POST", "/score", good)
        assert status == 200
        for _ in range(100):  # the service notices the closed connection on its own time
            _, _, metrics = request(url, "GET", "/metrics")
            if metric(metrics, "rankiqa_client_disconnects_total") == 1:
                break
            time.sleep(0.05)
    assert metric(metrics, "rankiqa_client_disconnects_total") == 1
    assert metric(metrics, 'rankiqa_requests_total{code="422",path="/score"}') == 2


class SlowScorer:
    """A scorer whose network takes `seconds` a call: the queue fills behind it."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, []

    def score_batch(self, crops):
        self.calls.append(len(crops))
        time.sleep(self.seconds)
        return crops.reshape(len(crops), -1).mean(axis=1).astype(np.float32)

    def check_finite(self, scores):
        pass


def test_a_full_queue_is_refused_at_once_and_nothing_accepted_is_lost():
    scorer = SlowScorer(0.2)
    batcher = batching.Batcher(scorer, max_batch=2, max_wait=0.0, queue_size=3)
    views = [np.full((2, 4, 4, 3), k, np.uint8) for k in range(12)]
    accepted, busy = [], []
    for k, v in enumerate(views):
        try:
            accepted.append((k, batcher.submit(v)))
        except batching.Busy as e:
            busy.append(e)
    assert busy and all(e.retry_after >= 1 for e in busy)
    assert "the queue's limit" in str(busy[0])
    batcher.close()  # what was accepted is scored before the thread ends
    assert [f.result(timeout=0) for _, f in accepted] == [float(k) for k, _ in accepted]
    assert max(scorer.calls) <= 2 * 2  # max_batch photos of two views


def test_photos_that_arrive_together_share_a_batch():
    scorer = SlowScorer(0.0)
    batcher = batching.Batcher(scorer, max_batch=8, max_wait=5.0, queue_size=64)
    batcher.expect(6)  # six photos being decoded

    def one(k):
        time.sleep(0.05 * k)  # arriving one by one
        future = batcher.submit(np.full((1, 2, 2, 3), k, np.uint8))
        batcher.expect(-1)
        return future.result(timeout=10)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, range(6))) == [float(k) for k in range(6)]
    assert scorer.calls == [6]  # one batch, with no 5 s wait: the last photo ended it
    # a photo alone is not held back for company
    started = time.monotonic()
    assert batcher.submit(np.full((1, 2, 2, 3), 7, np.uint8)).result(timeout=10) == 7.0
    assert time.monotonic() - started < 4.0 and scorer.calls == [6, 1]
    batcher.close()


def test_a_failing_network_answers_its_callers_and_keeps_serving():
    class Failing(SlowScorer):
        def score_batch(self, crops):
            if crops.max() == 9:
                raise RuntimeError("out of memory")
            return super().score_batch(crops)

    batcher = batching.Batcher(Failing(0.0), max_batch=1, max_wait=0.0)
    bad = batcher.submit(np.full((1, 2, 2, 3), 9, np.uint8))
    with pytest.raises(RuntimeError, match="out of memory"):
        bad.result(timeout=10)
    assert batcher.submit(np.full((1, 2, 2, 3), 3, np.uint8)).result(timeout=10) == 3.0
    batcher.close()


def test_the_command_serves_until_sigterm_and_answers_what_it_accepted(stage_one, photos,
                                                                       expected):
    server = subprocess.Popen(
        [sys.executable, "-m", "rankiqa", "serve", "--model", stage_one, "--port", "0",
         "--engine", "tensorflow"],
        stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(" at http://" in line for line in lines):
            lines.append(server.stderr.readline())
            assert lines[-1], "".join(lines)  # it ended before serving
        url = lines[-1].split(" at ")[1].split(";")[0]
        assert url.startswith("http://127.0.0.1:")
        host, port = url.removeprefix("http://").split(":")
        photo = open(photos[1], "rb").read()
        with socket.create_connection((host, int(port))) as client:
            client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                           % len(photo) + photo[:100])
            time.sleep(0.5)
            server.send_signal(signal.SIGTERM)  # mid-upload: still answered
            time.sleep(0.5)
            client.sendall(photo[100:])
            answer = client.makefile("rb").read()
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["score"] == pytest.approx(expected[photos[1]], abs=TOLERANCE)
        assert server.wait(timeout=60) == 0
        assert "every accepted request was answered" in server.stderr.read()
    finally:
        server.kill()


def test_limits_and_options_are_checked_before_the_model_loads(stage_one):
    with pytest.raises(Exception, match="max_batch must be >= 1"):
        service.Limits(max_batch=0)
    taken, url = service.bind("127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1])
    try:
        result = CliRunner().invoke(main, ["serve", "--model", stage_one, "--port", str(port)])
    finally:
        taken.close()
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    result = CliRunner().invoke(main, ["serve", "--model", "no-such-model", "--port", "0"])
    assert result.exit_code != 0 and "no-such-model" in result.stderr


def test_the_deployments_run_the_service_with_options_it_has():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    deployment = list(yaml.safe_load_all(open(os.path.join(
        root, "deploy", "kubernetes", "rankiqa-serve.yaml"))))
    pod = next(d for d in deployment if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    args = container["args"]
    assert args[0] == "serve"
    dockerfile = open(os.path.join(root, "deploy", "Dockerfile")).read()
    command = json.loads(dockerfile.split("\nCMD ")[1].splitlines()[0])
    for given in (args, command[1:]):  # every option parses: --help stops before any work
        result = CliRunner().invoke(main, [*given, "--help"])
        assert result.exit_code == 0, (given, result.output)
        assert given[given.index("--host") + 1] == "0.0.0.0"
