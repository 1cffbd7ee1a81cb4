"""`rankiqa launch --workers N -- COMMAND ...`: a multi-worker job of N local processes.

Each worker runs ``python -m rankiqa COMMAND ...`` with its own ``TF_CONFIG`` (a cluster of N
tasks on free loopback ports, `rankiqa.run.cluster.local_tf_configs`); their output is streamed with
a ``[worker K]`` prefix. Synchronous all-reduce has no elasticity: when one worker dies the
others wait in their next collective forever. So when a worker fails, or no worker prints a line
for `stall_timeout` seconds, every worker is stopped and the launch fails with one line naming
the cause; rerunning the same launch resumes from the chief's last checkpoint.

It is how the tests run multi-worker training, and how one large machine runs several
processes; on a real cluster, a scheduler starts one worker per machine with its own
``TF_CONFIG`` instead (`deploy/`).
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from rankiqa.run import cluster
from rankiqa.errors import InputError, RankiqaError

GRACE_SECONDS = 5  # between SIGTERM and SIGKILL when stopping the workers


class LaunchFailed(RankiqaError):
    """A worker failed or the job stalled; every worker was stopped."""


def _describe_status(code):
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _stream(index, pipe, lines):
    for line in iter(pipe.readline, ""):
        lines.put((index, line.rstrip("\n")))
    pipe.close()


def _stop(workers):
    for proc in workers:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + GRACE_SECONDS
    for proc in workers:
        try:
            proc.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def launch(workers, command, stall_timeout=900.0, echo=print, python=sys.executable):
    """Runs `command` (rankiqa arguments, e.g. ``["train-rank", "--config", ...]``) as a job of
    `workers` local processes and waits for all of them.

    Args:
      workers: processes (>= 1); worker 0 is the chief.
      command: the rankiqa command line each worker runs.
      stall_timeout: seconds without a line from any worker after which the job counts as
        stalled (a hung collective prints nothing); mind evaluations and the probe, which
        print nothing for a while.
      echo: callable taking each output line.

    Raises:
      InputError: no command, a bad worker count or timeout.
      LaunchFailed: a worker failed or the job stalled; all workers are stopped by then.
    """
    if not command:
        raise InputError("launch needs a command after --, e.g. "
                         "rankiqa launch --workers 2 -- train-rank --config rank_tiny ...")
    if command[0] in ("launch", "-m"):
        raise InputError(f"launch runs a rankiqa training command, not {command[0]!r}")
    if stall_timeout <= 0:
        raise InputError(f"--timeout must be > 0 seconds, got {stall_timeout}")
    most = max_local_workers()
    if workers > most:
        raise InputError(f"--workers {workers}: a local job takes 1 to {most} (4 per CPU core "
                         "here: each worker is a TensorFlow process of its own)")
    lines, procs, readers = queue.Queue(), [], []
    try:
        for index, tf_config in enumerate(cluster.local_tf_configs(workers)):
            procs.append(_start_worker(index, tf_config, command, python, lines, readers, echo))
        _watch(procs, readers, lines, stall_timeout, echo)
    except BaseException:
        _stop(procs)  # Ctrl-C or any error: never leave workers waiting on each other
        raise


def max_local_workers():
    """The most workers one machine runs: 4 per core. More only contend (and each holds a
    TensorFlow runtime: hundreds of MB, and file handles towards the system's limit)."""
    return (os.cpu_count() or 1) * 4


def _start_worker(index, tf_config, command, python, lines, readers, echo):
    """Worker `index` started in a process group of its own (stopped whole), its output read
    into `lines` by a thread appended to `readers`."""
    env = dict(os.environ, TF_CONFIG=tf_config, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([python, "-m", "rankiqa", *command], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    echo(f"[launch] worker {index} is pid {proc.pid}")
    reader = threading.Thread(target=_stream, args=(index, proc.stdout, lines), daemon=True)
    reader.start()
    readers.append(reader)
    return proc


def _watch(procs, readers, lines, stall_timeout, echo):
    """Echoes the workers' lines until all end well; raises `LaunchFailed` naming the first
    that failed, or when none printed for `stall_timeout` seconds."""
    last_line = time.time()
    ended = {}  # worker -> (poll at which it was first seen ended, exit code)
    polls = 0
    while True:
        try:
            index, line = lines.get(timeout=1.0)
            echo(f"[worker {index}] {line}")
            last_line = time.time()
        except queue.Empty:
            pass
        # polled at every line too: when one worker dies, the others fail in their next
        # collective a moment later, and the one to name is the first to end
        polls += 1
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = (polls, proc.returncode)
        failed = [(poll, code > 0, i, code) for i, (poll, code) in ended.items() if code]
        if failed:
            # seen in the same poll, a worker killed by a signal is the cause, not its peers
            _, _, index, code = min(failed)
            _stop(procs)
            _drain(lines, readers, echo)
            raise LaunchFailed(
                f"worker {index} (pid {procs[index].pid}) {_describe_status(code)}; stopped "
                f"the other workers. Rerun the same command to resume from the chief's "
                f"last checkpoint")
        if all(proc.returncode == 0 for proc in procs):
            _drain(lines, readers, echo)
            return
        if time.time() - last_line > stall_timeout:
            _stop(procs)
            raise LaunchFailed(
                f"no worker printed anything for {stall_timeout:g} s: the job stalled (a "
                f"worker unreachable or stuck in a collective); stopped every worker. "
                f"Raise --timeout if a quiet stretch (evaluation, probe) is that long")


def _drain(lines, readers, echo):
    """Prints what the workers wrote before they ended."""
    for reader in readers:
        reader.join(timeout=GRACE_SECONDS)
    while True:
        try:
            index, line = lines.get_nowait()
        except queue.Empty:
            return
        echo(f"[worker {index}] {line}")
