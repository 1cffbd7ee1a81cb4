"""Photos from many requests scored in shared batches: one bounded queue, one scoring thread.

`rankiqa serve` places each upload's views in its request (`place_upload`), then hands them
here. The scoring thread takes the first photo waiting, gathers what else arrives within
`max_wait` seconds or until `max_batch` photos, and runs them through the network in one call.
It waits only while other photos are being decoded (`expect`): under load the batches fill by
themselves (requests queue while the network runs), and a photo alone never waits. A full
queue is refused at once (`Busy`), never waited on.

A photo's score is the mean over its views, as `predict` gives it: the network's output for a
view does not depend on which other views share its batch (`tests/test_serve.py` checks this
against `predict`).
"""

import collections
import concurrent.futures
import io
import math
import threading
import time

import numpy as np

from rankiqa.data import images as images_lib
from rankiqa.errors import InputError, RankiqaError


class Busy(RankiqaError):
    """The queue is full; `retry_after` seconds is the time its photos are expected to take."""

    def __init__(self, waiting, retry_after):
        super().__init__(f"{waiting} photos are waiting to be scored, the queue's limit; "
                         f"retry in {retry_after} s")
        self.retry_after = retry_after


def place_upload(data, name, views):
    """The views ``[count, crop, crop, 3]`` uint8 of an uploaded file's bytes, decoded as
    `predict` decodes a file (`rankiqa.data.images.load_image`).

    Raises:
      BadImageError: bytes that are not a readable image, or one over the pixel limit.
    """
    return views.apply(images_lib.load_image(io.BytesIO(data), name=name))


class Batcher:
    """Scores placed views of photos in batches across callers (thread-safe).

    Args:
      scorer: a `rankiqa.serve.scoring.Scorer` owning its session (or ONNX Runtime).
      max_batch: photos per network call at most.
      max_wait: seconds the first photo of a batch waits for others.
      queue_size: photos waiting at most; beyond it `submit` raises `Busy`.
    """

    def __init__(self, scorer, max_batch=16, max_wait=0.005, queue_size=256):
        if max_batch < 1 or queue_size < 1 or max_wait < 0:
            raise InputError("max_batch and queue_size must be >= 1, max_wait >= 0")
        self.scorer, self.max_batch, self.max_wait = scorer, max_batch, max_wait
        self.queue_size = queue_size
        self.waiting = collections.deque()  # (views, future)
        self.expected = 0  # photos being decoded: worth waiting for
        self.ready = threading.Condition()
        self.closed = False
        self.photos_per_s = None  # the last batches' rate: Retry-After's estimate
        self.on_batch = None  # optional ``on_batch(photos, seconds)``: the metrics
        self.thread = threading.Thread(target=self._loop, name="rankiqa-scoring", daemon=True)
        self.thread.start()

    def submit(self, views):
        """A `concurrent.futures.Future` of the photo's score (a float) from its `views`
        ``[count, crop, crop, 3]``.

        Raises:
          Busy: `queue_size` photos are waiting already.
        """
        future = concurrent.futures.Future()
        with self.ready:
            if self.closed:
                raise RankiqaError("the service is shutting down")
            if len(self.waiting) >= self.queue_size:
                rate = self.photos_per_s or 1.0
                raise Busy(len(self.waiting), max(1, math.ceil(len(self.waiting) / rate)))
            self.waiting.append((views, future))
            self.ready.notify()
        return future

    def expect(self, count):
        """`count` more photos are being decoded (negative: that many arrived or failed)."""
        with self.ready:
            self.expected += count
            self.ready.notify()

    def depth(self):
        return len(self.waiting)

    def close(self):
        """Scores what is waiting, then stops the thread."""
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.thread.join()

    def _take(self):
        """The next batch, [] once closed and drained."""
        with self.ready:
            while not self.waiting and not self.closed:
                self.ready.wait()
            deadline = time.monotonic() + self.max_wait
            while (len(self.waiting) < self.max_batch and self.expected > 0
                   and not self.closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.ready.wait(left)
            count = min(self.max_batch, len(self.waiting))
            return [self.waiting.popleft() for _ in range(count)]

    def _loop(self):
        while True:
            batch = self._take()
            if not batch:
                return
            batch = [(views, future) for views, future in batch
                     if future.set_running_or_notify_cancel()]
            if batch:
                self._score(batch)

    def _score(self, batch):
        started = time.monotonic()
        counts = [len(views) for views, _ in batch]
        try:
            scores = self.scorer.score_batch(np.concatenate([views for views, _ in batch]))
            self.scorer.check_finite(scores)
        except Exception as e:  # every caller of the batch learns it; the thread goes on
            for _, future in batch:
                future.set_exception(e)
            return
        seconds = time.monotonic() - started
        self.photos_per_s = len(batch) / max(seconds, 1e-6)
        ends = np.cumsum(counts)
        for (_, future), end, count in zip(batch, ends, counts):
            future.set_result(float(scores[end - count:end].mean()))
        if self.on_batch:
            self.on_batch(len(batch), seconds)
