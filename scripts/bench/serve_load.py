"""P14 (BENCHMARKS.md): `rankiqa serve` under load, on loopback only, bounded in count and time.

    python scripts/bench/serve_load.py [--model NAME] [--engine auto] [--photos 200]
        [--levels 1,8,32,128] [--requests 400] [--soak-minutes 10] [--work-dir runs/bench_serve]
        [--levels-only]

1. Reference: the photos through `predict` (its scoring loop, timed from its first progress
   call: model loading excluded, as the service loads once) and one at a time through
   `load_model(...).score(path)`: photos/s, one photo's scoring time (median and 99th
   percentile over the photos), and the scores every answer must equal (to 1e-5: a float32
   score's last bits move with its batch).
2. Levels: for each concurrency, that many clients on keep-alive connections post photos (raw
   bodies) until --requests answers: photos/s, p50/p99 latency, errors, the server's RSS.
3. Kill: at concurrency 32 the server is killed (SIGKILL) mid-load and started again; clients
   retry a request whose connection failed; every photo must still get its own score.
4. Disconnects: at concurrency 8, 50 more clients each send half an upload and hang up.
5. Soak: concurrency 32 for --soak-minutes, the server's RSS sampled every second.
Prints one JSON line per phase and a summary; the photos are seeded 640x480 JPEGs written once.
"""

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

TOLERANCE = 1e-5
HOST = "127.0.0.1"


def make_photos(folder, count):
    """Seeded photos whose quality varies: smooth scenes, blurred or noised by degrees."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        path = os.path.join(folder, f"photo_{k:04d}.jpg")
        if os.path.exists(path):
            continue
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
        scene = np.asarray(Image.fromarray(coarse).resize((640, 480), Image.BICUBIC), np.float32)
        scene += rng.normal(0, 40 * (k % 5) / 4, scene.shape)
        Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)).save(path, quality=95 - k % 60)
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".jpg"))


def reference(photos, model, engine):
    """predict's photos/s and scores, and one photo's median scoring time, in this process."""
    from rankiqa.serve import predict

    started = {}
    rows, _, used = predict.predict(
        photos, model, engine=engine,
        progress=lambda done, total: started.setdefault("t", time.perf_counter()))
    seconds = time.perf_counter() - started["t"]
    expected = {row["path"]: row["score"] for row in rows}
    with predict.load_model(model, engine=engine) as loaded:
        loaded.score(photos[0])  # warm
        times = []
        for path in photos:
            t = time.perf_counter()
            loaded.score(path)
            times.append(time.perf_counter() - t)
    return {"predict_photos_per_s": len(rows) / seconds, "one_photo_s": float(np.median(times)),
            "one_photo_p99_s": float(np.percentile(times, 99)), "engine": used.engine}, expected


class Server:
    """`rankiqa serve` as a child process; its stderr drained in a thread."""

    def __init__(self, model, engine, port=0):
        self.args = [sys.executable, "-m", "rankiqa", "serve", "--model", model,
                     "--engine", engine, "--host", HOST]
        self.port = port
        self.start()

    def start(self):
        self.process = subprocess.Popen([*self.args, "--port", str(self.port)],
                                        stderr=subprocess.PIPE, text=True)
        self.lines = []
        ready = threading.Event()

        def drain():
            for line in self.process.stderr:
                self.lines.append(line)
                if " at http://" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(600)
        served = [line for line in self.lines if " at http://" in line]
        if not served:
            raise SystemExit("the server did not start:\n" + "".join(self.lines))
        self.port = int(served[0].split(" at http://")[1].split(";")[0].rsplit(":", 1)[1])

    def rss_mb(self, key="VmRSS"):
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return None

    def stop(self):
        self.process.terminate()
        self.process.wait(120)


async def post(reader, writer, body, name):
    writer.write(b"POST /score?name=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                 b"application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                 % (name.encode(), HOST.encode(), len(body)) + body)
    await writer.drain()
    status = await reader.readline()
    if not status:
        raise ConnectionResetError("closed before answering")
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, value = line.decode().split(":", 1)
        headers[key.strip().lower()] = value.strip()
    data = await reader.readexactly(int(headers["content-length"]))
    return int(status.split()[1]), headers, data


async def client(server, jobs, bodies, results, deadline):
    """Posts photos from `jobs` until it runs dry; a failed connection is retried."""
    connection = None
    for k in jobs:
        while time.monotonic() < deadline:
            try:
                if connection is None:
                    connection = await asyncio.open_connection(HOST, server.port)
                started = time.perf_counter()
                status, headers, data = await post(*connection, bodies[k], str(k))
            except (OSError, asyncio.IncompleteReadError):
                connection = None
                results["retried"] += 1
                await asyncio.sleep(0.2)
                continue
            if status == 503:
                results["busy"] += 1
                await asyncio.sleep(float(headers.get("retry-after", 1)))
                continue
            results["answers"].append((k, status, data, time.perf_counter() - started))
            break
        else:
            results["lost"] += 1
    if connection is not None:
        connection[1].close()


def load(server, concurrency, count, photos, bodies, seconds=None, during=None):
    """`count` answers (or `seconds` of them) from `concurrency` clients; `during(server)` runs
    in a thread meanwhile."""
    results = {"answers": [], "retried": 0, "busy": 0, "lost": 0, "rss_mb": []}
    order = itertools.cycle(range(len(photos))) if seconds else (
        k % len(photos) for k in range(count))
    deadline = time.monotonic() + (seconds or 600)
    jobs = itertools.takewhile(lambda _: time.monotonic() < deadline, order)

    async def run():
        await asyncio.gather(*[client(server, jobs, bodies, results, deadline + 120)
                               for _ in range(concurrency)])

    helper = during and threading.Thread(target=during, args=(server, results))
    helper and helper.start()
    sampler = threading.Thread(target=sample_rss, args=(server, results), daemon=True)
    sampler.start()
    started = time.perf_counter()
    asyncio.run(run())
    results["seconds"] = time.perf_counter() - started
    results["done"] = True
    helper and helper.join()
    return results


def sample_rss(server, results):
    while not results.get("done") and server.process.poll() is None:
        try:
            results["rss_mb"].append((time.monotonic(), server.rss_mb()))
        except FileNotFoundError:
            pass
        time.sleep(1)


def summary(name, results, photos, expected, **extra):
    answers = results["answers"]
    ok = [a for a in answers if a[1] == 200]
    wrong = [a for a in ok if abs(json.loads(a[2])["score"] - expected[photos[a[0]]])
             > TOLERANCE]
    latency = np.array([a[3] for a in ok]) if ok else np.zeros(1)
    rss = [r for _, r in results["rss_mb"] if r]
    line = {"phase": name, "answers": len(answers), "ok": len(ok),
            "errors": len(answers) - len(ok), "mismatched": len(wrong),
            "lost": results["lost"], "retried": results["retried"], "busy": results["busy"],
            "photos_per_s": round(len(ok) / results["seconds"], 2),
            "p50_ms": round(float(np.percentile(latency, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(latency, 99)) * 1000, 1),
            "rss_mb_max": round(max(rss), 1) if rss else None, **extra}
    print(json.dumps(line), flush=True)
    return line


def kill_and_restart(server, results):
    while len(results["answers"]) < 60 and not results.get("done"):  # mid-load
        time.sleep(0.05)
    server.process.kill()
    server.process.wait()
    results["killed_at"] = time.monotonic()
    server.start()  # the same port
    results["back_after_s"] = round(time.monotonic() - results["killed_at"], 1)


def half_uploads(server, results, count=50):
    import socket

    while len(results["answers"]) < 10 and not results.get("done"):
        time.sleep(0.05)
    for _ in range(count):
        with socket.create_connection((HOST, server.port)) as sock:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
                         + b"\xff\xd8" + b"\0" * 50000)
        time.sleep(0.01)


def metric(server, name):
    import urllib.request

    text = urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=30).read()
    values = [line.split(" ")[1] for line in text.decode().splitlines()
              if line.split(" ")[0] == name]
    return float(values[0]) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: the default built-in model")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--levels", default="1,8,32,128")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--soak-minutes", type=float, default=10)
    parser.add_argument("--work-dir", default="runs/bench_serve")
    parser.add_argument("--levels-only", action="store_true",
                        help="the reference and the levels; no kill, disconnects or soak")
    args = parser.parse_args()
    from rankiqa.weights import builtin

    model = args.model or builtin.DEFAULT
    photos = make_photos(os.path.join(args.work_dir, "photos"), args.photos)
    bodies = [open(p, "rb").read() for p in photos]
    ref, expected = reference(photos, model, args.engine)
    print(json.dumps({"phase": "reference", **ref}), flush=True)
    server = Server(model, args.engine)
    lines = {}
    try:
        for level in map(int, args.levels.split(",")):
            results = load(server, level, max(args.requests, 2 * level), photos, bodies)
            lines[level] = summary(f"concurrency {level}", results, photos, expected)
        if args.levels_only:
            return report(ref, lines)
        results = load(server, 32, 3 * args.requests, photos, bodies, during=kill_and_restart)
        lines["kill"] = summary("kill and restart at 32", results, photos, expected,
                                back_after_s=results.get("back_after_s"))
        results = load(server, 8, args.requests, photos, bodies, during=half_uploads)
        lines["disconnects"] = summary(
            "half uploads at 8", results, photos, expected,
            disconnects_counted=metric(server, "rankiqa_client_disconnects_total"))
        if args.soak_minutes:
            results = load(server, 32, 0, photos, bodies, seconds=60 * args.soak_minutes)
            rss = [r for _, r in results["rss_mb"] if r]
            minute = max(1, len(rss) // int(max(1, args.soak_minutes)))  # samples are 1 s apart
            lines["soak"] = summary(
                f"soak {args.soak_minutes} min at 32", results, photos, expected,
                rss_mb_first_minute=round(max(rss[:minute]), 1),
                rss_mb_last_minute=round(max(rss[-minute:]), 1))
        report(ref, lines)
    finally:
        server.stop()


def report(ref, lines):
    c1, c32 = lines.get(1), lines.get(32)
    out = {"engine": ref["engine"], "predict_photos_per_s": round(ref["predict_photos_per_s"], 2),
           "one_photo_ms": round(ref["one_photo_s"] * 1000, 1),
           "one_photo_p99_ms": round(ref["one_photo_p99_s"] * 1000, 1)}
    if c32:
        out["c32_over_predict"] = round(c32["photos_per_s"] / ref["predict_photos_per_s"], 3)
    if c1:  # against one photo's median time, and against its own 99th percentile
        out["c1_p99_over_one_photo"] = round(c1["p99_ms"] / 1000 / ref["one_photo_s"], 3)
        out["c1_p99_over_one_photo_p99"] = round(c1["p99_ms"] / 1000 / ref["one_photo_p99_s"], 3)
    out["lost_or_mismatched"] = sum(line["lost"] + line["mismatched"] for line in lines.values())
    print(json.dumps({"phase": "summary", **out}), flush=True)


if __name__ == "__main__":
    main()
