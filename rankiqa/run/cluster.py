"""Who the workers of a multi-machine run are: ``TF_CONFIG``, read and checked in one place.

TensorFlow's distribution runtime learns the cluster from the ``TF_CONFIG`` environment
variable, one per process::

    {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}

Worker 0 is the chief (it writes checkpoints, ``eval.json`` and summaries); a separate
``"chief"`` job, as TensorFlow also allows, is taken first when present. Nothing here imports
TensorFlow: `rankiqa launch` uses it to start workers without paying for a TF import.
"""

import json
import os
import socket
from dataclasses import dataclass
from typing import Tuple

from rankiqa.errors import InputError

ENV = "TF_CONFIG"
JOBS = ("chief", "worker")  # all-reduce training has no parameter servers or evaluators


class ClusterError(InputError):
    """``TF_CONFIG`` is malformed or names an impossible cluster."""


@dataclass(frozen=True)
class Cluster:
    addresses: Tuple[str, ...]  # every task, the chief first
    job: str  # this process's task type
    index: int  # and index within its job
    rank: int  # its position in `addresses` (0: the chief)

    @property
    def size(self):
        return len(self.addresses)

    @property
    def is_chief(self):
        return self.rank == 0

    def describe(self):
        return f"{self.job} {self.index} ({self.rank + 1} of {self.size}, {self.addresses[self.rank]})"


def parse(text):
    """`Cluster` from a ``TF_CONFIG`` string; None when it names no cluster.

    Raises:
      ClusterError: not JSON, unknown job types, a task outside the cluster, an address twice.
    """
    if not text or not text.strip():
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClusterError(f"{ENV} is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(spec, dict):
        raise ClusterError(f"{ENV} must be a JSON object with 'cluster' and 'task'")
    jobs = spec.get("cluster") or {}
    if not isinstance(jobs, dict):
        raise ClusterError(f"{ENV}: 'cluster' must map job names to address lists")
    if not jobs:
        return None
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        raise ClusterError(f"{ENV}: job {unknown[0]!r} is not supported; synchronous all-reduce "
                           f"training takes only {list(JOBS)} (no parameter servers)")
    addresses = []
    for job in JOBS:
        listed = jobs.get(job, [])
        if not isinstance(listed, list) or not all(isinstance(a, str) and ":" in a for a in listed):
            raise ClusterError(f"{ENV}: cluster.{job} must be a list of 'host:port' strings")
        if job == "chief" and len(listed) > 1:
            raise ClusterError(f"{ENV}: cluster.chief lists {len(listed)} tasks; at most one")
        addresses.extend((job, i, a) for i, a in enumerate(listed))
    seen = set()
    for _, _, address in addresses:
        if address in seen:
            raise ClusterError(f"{ENV} lists {address} twice: each task needs its own host:port")
        seen.add(address)
    task = spec.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ClusterError(f"{ENV} needs 'task': {{'type': 'worker', 'index': N}} saying which "
                           "task this process is")
    job, index = task["type"], task["index"]
    if job not in jobs or not isinstance(index, int) or isinstance(index, bool) \
            or not 0 <= index < len(jobs[job]):
        raise ClusterError(f"{ENV}: task {job} {index!r} is not in the cluster "
                           f"({', '.join(f'{k}: {len(v)}' for k, v in jobs.items())})")
    rank = [(j, i) for j, i, _ in addresses].index((job, index))
    return Cluster(tuple(a for _, _, a in addresses), job, index, rank)


def from_environment():
    """`Cluster` of this process (``TF_CONFIG``), or None."""
    return parse(os.environ.get(ENV, ""))


def free_ports(count, host="127.0.0.1"):
    """`count` ports free on `host` now (the sockets are closed again, so a race is possible
    but unlikely on one machine)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_tf_configs(workers, host="127.0.0.1"):
    """One ``TF_CONFIG`` string per worker of a cluster on `host`'s free ports."""
    if workers < 1:
        raise ClusterError(f"--workers must be >= 1, got {workers}")
    addresses = [f"{host}:{p}" for p in free_ports(workers, host)]
    return [json.dumps({"cluster": {"worker": addresses},
                        "task": {"type": "worker", "index": i}}) for i in range(workers)]
