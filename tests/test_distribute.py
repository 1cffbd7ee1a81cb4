"""Training on several devices and machines (`rankiqa/train/distribute.py`, `rankiqa launch`)
and mixed precision: the same numbers as one device, clear errors, no hang when a worker dies.

Several devices are 2 logical CPU devices; several machines are worker processes on loopback
ports (each pays a TensorFlow import, ~5 s). Every child process has a timeout."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from rankiqa_testkit import finetune_config, model_values, tiny_rank_overrides
from rankiqa import cli
from rankiqa.run import cluster
from rankiqa import config as config_lib
from rankiqa.errors import InputError

TIMEOUT = 240  # seconds for any child process


def rank_config(rank_data, **extra):
    # frozen batch norm: per-replica batch statistics would (rightly) differ from one device's
    values = {"train.frozen_batch_norm": "true", "train.max_steps": 3, "train.eval_every": 0,
              "train.save_every": 3, "optim.optimizer": "sgd", "optim.lr": 0.05}
    values.update(extra)
    return tiny_rank_overrides(rank_data, **values)


@pytest.fixture(scope="module")
def start(stage_one):
    """A shared start for every run compared here: the random initialisers' seeds follow the
    graph's op count, which differs between one device and a strategy."""
    return stage_one


# --------------------------------------------------------------------------- cluster


@pytest.mark.parametrize("text, message", [
    ("{not json", r"TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
     r"lists a:1 twice"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     r"task worker 2 is not in the cluster"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     r"job 'ps' is not supported"),
    ('{"cluster": {"worker": ["a:1"]}}', r"needs 'task'"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
     r"must be a list of 'host:port'"),
])
def test_malformed_tf_config_is_one_clear_error(text, message):
    with pytest.raises(cluster.ClusterError, match=message):
        cluster.parse(text)


def test_tf_config_names_the_chief_first():
    spec = {"cluster": {"worker": ["w0:1", "w1:1"], "chief": ["c:1"]},
            "task": {"type": "worker", "index": 1}}
    parsed = cluster.parse(json.dumps(spec))
    assert parsed.addresses == ("c:1", "w0:1", "w1:1")
    assert parsed.rank == 2 and not parsed.is_chief
    assert cluster.parse("") is None and cluster.parse('{"cluster": {}}') is None
    configs = [json.loads(c) for c in cluster.local_tf_configs(3)]
    assert len({a for c in configs for a in c["cluster"]["worker"]}) == 3
    assert [c["task"]["index"] for c in configs] == [0, 1, 2]


# --------------------------------------------------------------------------- bad input


def test_bad_distribution_options_are_refused(rank_data, tmp_path, monkeypatch):
    from rankiqa.train import rank

    def train(**extra):
        cfg = config_lib.load(config_lib.RankConfig, None, rank_config(rank_data, **extra))
        return rank.train(cfg, str(tmp_path / "run"), device="cpu", log=lambda line: None)

    with pytest.raises(InputError, match=r"data.references_per_batch=3 does not divide among "
                                         r"2 replicas"):
        train(**{"train.strategy": "mirrored", "train.devices": 2,
                 "data.references_per_batch": 3})
    with pytest.raises(InputError, match=r"unknown strategy 'ring'"):
        train(**{"train.strategy": "ring"})
    with pytest.raises(InputError, match=r"multi_worker needs TF_CONFIG"):
        train(**{"train.strategy": "multi_worker"})
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:1"]}}')
    with pytest.raises(InputError, match=r"lists 127.0.0.1:1 twice"):
        train()
    assert not os.path.exists(tmp_path / "run")  # refused before anything was written


def test_launch_refuses_bad_input(tmp_path):
    runner = CliRunner()
    for args, message in [(["--workers", "0", "--", "train-rank"], "--workers must be >= 1"),
                          (["--workers", "2"], "launch needs a command after --"),
                          (["--workers", "2", "--timeout", "0", "--", "train-rank"],
                           "--timeout must be > 0"),
                          (["--workers", "30000", "--", "train-rank"],
                           "--workers 30000: a local job takes 1 to ")]:
        result = runner.invoke(cli.main, ["launch", *args])
        assert result.exit_code == 1, result.output
        assert f"error: {message}" in result.output


# --------------------------------------------------------------------------- several devices


def test_each_replica_gets_whole_references_and_none_twice_in_a_step(tmp_path):
    """Replica slices of a global ranking batch: whole references (all 6 levels, in order),
    disjoint; image value 10 * reference + level tells them apart."""
    from PIL import Image

    from rankiqa.compat import tf
    from rankiqa.data import pipeline
    from rankiqa.data.lists import RankGroup
    from rankiqa.train import distribute

    groups = []
    for r in range(8):
        paths = []
        for level in range(6):
            path = tmp_path / f"r{r}_{level}.png"
            Image.fromarray(np.full((40, 40, 3), 10 * r + level, np.uint8)).save(path)
            paths.append(str(path))
        groups.append(RankGroup(f"r{r}", "gblur", tuple(paths)))
    graph = tf.Graph()
    with graph.as_default():  # the strategy too: made in graph mode
        placement = distribute.get_placement("mirrored", devices=2, device="cpu")
        dataset = pipeline.rank_dataset(groups, 32, references_per_batch=4, seed=0)
        with placement.strategy.scope():
            iterator = distribute.make_iterator(placement.strategy, dataset)
            slices = placement.strategy.experimental_local_results(iterator.get_next())
    with graph.as_default(), tf.Session(config=placement.config) as sess:
        sess.run(iterator.initialize())
        for _ in range(4):
            per_replica = [batch[:, 0, 0, 0].astype(int) for batch in sess.run(slices)]
            seen = []
            for values in per_replica:
                assert len(values) == 2 * 6  # 2 of the 4 references
                for rows in values.reshape(2, 6):
                    assert list(rows % 10) == list(range(6)) and len(set(rows // 10)) == 1
                    seen.append(rows[0] // 10)
            assert len(set(seen)) == 4  # no reference twice in one global step


def test_mirrored_on_two_devices_equals_one_device(rank_data, start, tmp_path):
    from rankiqa.compat import tf
    from rankiqa.train import rank

    runs = {}
    for strategy in ("one_device", "mirrored"):
        cfg = config_lib.load(config_lib.RankConfig, None, rank_config(
            rank_data, **{"init.source": start, "init.exclude_scopes": "[]",
                          "train.strategy": strategy, "train.devices": 2
                          if strategy == "mirrored" else 0}))
        result = rank.train(cfg, str(tmp_path / strategy), device="cpu", log=lambda line: None)
        runs[strategy] = (result, model_values(str(tmp_path / strategy)))
    graph = runs["mirrored"][0]["graph"]  # the mirrored run's
    assert {op.device.rsplit(":", 1)[-1] for op in graph.get_operations()
            if "CPU" in op.device and op.type == "Conv2D"} == {"0", "1"}
    assert type(graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES)[0]).__name__ == \
        "MirroredVariable"
    one, two = runs["one_device"], runs["mirrored"]
    assert one[0]["step"] == two[0]["step"] == 3
    assert abs(one[0]["loss"] - two[0]["loss"]) < 1e-5
    moved = max(np.abs(one[1][n] - model_values(start)[n]).max() for n in one[1])
    assert moved > 1e-3  # the comparison is not between two untrained copies
    for name, value in one[1].items():
        np.testing.assert_allclose(two[1][name], value, atol=1e-5, err_msg=name)


def test_mirrored_finetune_equals_one_device_and_restores_in_one_process(label_file, start,
                                                                          tmp_path):
    from rankiqa.serve import scoring
    from rankiqa.train import finetune

    values = {}
    for strategy in ("one_device", "mirrored"):
        cfg = finetune_config(label_file, init=start, **{
            "init.exclude_scopes": "[]", "finetune.frozen_batch_norm": "true",
            "optim.optimizer": "sgd", "optim.lr": 0.002, "train.strategy": strategy,
            "train.devices": 2 if strategy == "mirrored" else 0})
        finetune.train(cfg, str(tmp_path / strategy), device="cpu", log=lambda line: None)
        values[strategy] = model_values(str(tmp_path / strategy))
    for name, value in values["one_device"].items():
        np.testing.assert_allclose(values["mirrored"][name], value, atol=1e-5, err_msg=name)
    with scoring.load_scorer(str(tmp_path / "mirrored"), device="cpu") as scorer:
        assert scorer.model.report.missing == [] and scorer.views.count == 2


# --------------------------------------------------------------------------- several machines


def launch_cmd(workers, train_dir, overrides, command="train-rank", timeout=120):
    cmd = [sys.executable, "-m", "rankiqa", "launch", "--workers", str(workers), "--timeout",
           str(timeout), "--", command, "--train-dir", str(train_dir), "--device", "cpu"]
    for override in overrides:
        cmd += ["--set", override]
    return cmd


def test_two_workers_equal_one_process_and_the_chief_checkpoint_scores(rank_data, start,
                                                                      tmp_path):
    from rankiqa.serve import predict
    from rankiqa.train import rank

    overrides = rank_config(rank_data, **{"init.source": start, "init.exclude_scopes": "[]",
                                          "train.max_steps": 4, "train.save_every": 2,
                                          "train.eval_every": 2})
    out = subprocess.run(launch_cmd(2, tmp_path / "job", overrides), capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"\[worker 1\] training on multi_worker: 2 replica", out.stderr)
    # the chief alone wrote the run folder: one eval.json history, checkpoints at 2 and 4
    history = json.load(open(tmp_path / "job" / "eval.json"))["history"]
    assert [h["step"] for h in history] == [2, 4]
    # resumed at an evaluated step, every worker knows it is evaluated (none waits forever
    # in an evaluation alone)
    longer = [o for o in overrides if not o.startswith("train.max_steps=")]
    shutil.copytree(tmp_path / "job", tmp_path / "again")  # the job stays for the checks below
    again = subprocess.run(launch_cmd(2, tmp_path / "again", [*longer, "train.max_steps=6"]),
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[worker 1] resumed from" in again.stderr and "at step 4" in again.stderr
    history = json.load(open(tmp_path / "again" / "eval.json"))["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    cfg = config_lib.load(config_lib.RankConfig, None, overrides)
    rank.train(cfg, str(tmp_path / "one"), device="cpu", log=lambda line: None)
    one, job = model_values(str(tmp_path / "one")), model_values(str(tmp_path / "job"))
    for name, value in one.items():
        np.testing.assert_allclose(job[name], value, atol=1e-5, err_msg=name)
    photos = os.path.join(os.path.dirname(rank_data), "images")
    rows, problems, _ = predict.predict([photos], str(tmp_path / "job"),
                                        device="cpu")
    assert rows and not problems


def test_multi_worker_gradients_are_all_reduced_in_packs():
    """The v1 MultiWorkerMirroredStrategy takes no communication options; ours sets them on the
    strategy, where the optimizer's batch all-reduce reads them (P7). A fresh process: a
    collective strategy configures the process's runtime once."""
    program = ("from rankiqa.compat import tf\n"
               "from rankiqa.train import distribute\n"
               "s = tf.distribute.experimental.MultiWorkerMirroredStrategy()\n"
               "distribute._pack_gradients(s)\n"
               "options = s.extended._communication_options.merge(None)\n"
               "print(options.bytes_per_pack)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    from rankiqa.train import distribute

    assert int(out.stdout.split()[-1]) == distribute.ALLREDUCE_PACK_BYTES > 0


def test_two_workers_finetune_equal_one_process(label_file, start, tmp_path):
    from rankiqa.train import finetune

    extra = {"init.exclude_scopes": "[]", "finetune.frozen_batch_norm": "true",
             "optim.optimizer": "sgd", "optim.lr": 0.002}
    cfg = finetune_config(label_file, init=start, **extra)
    overrides = [f"{k}={v}" for k, v in {
        "net.name": "resnet_v2_tiny", "init.source": start, "data.label_file": label_file,
        "data.crop_size": 32, "data.batch_size": 4, "data.eval_crops": 2,
        "train.max_steps": 3, "train.log_every": 1, "train.save_every": 3,
        "train.eval_every": 0, **extra}.items()]
    out = subprocess.run(launch_cmd(2, tmp_path / "job", overrides, "finetune"),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    finetune.train(cfg, str(tmp_path / "one"), device="cpu", log=lambda line: None)
    one, job = model_values(str(tmp_path / "one")), model_values(str(tmp_path / "job"))
    for name, value in one.items():
        np.testing.assert_allclose(job[name], value, atol=1e-5, err_msg=name)


def test_a_dead_worker_stops_the_job_and_a_relaunch_resumes(rank_data, tmp_path):
    # a small learning rate: how far the first job gets before the kill varies with the
    # machine's load, and sgd at 0.05 can diverge at some of those steps
    steady = {"optim.lr": 0.005, "train.save_every": 5}
    overrides = rank_config(rank_data, **{"train.max_steps": 100000, "train.log_every": 5,
                                          **steady})
    proc = subprocess.Popen(launch_cmd(2, tmp_path / "job", overrides, timeout=60),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids, lines = {}, []
    try:
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            assert line, "the job ended early (end of its output):\n" + "".join(lines)
            found = re.match(r"\[launch\] worker (\d) is pid (\d+)", line)
            if found:
                pids[int(found.group(1))] = int(found.group(2))
            if "[worker 0] step 10/" in line:
                break
        assert os.path.exists(tmp_path / "job" / "model.ckpt-5.index"), "".join(lines)
        os.kill(pids[1], signal.SIGKILL)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert re.search(r"error: worker 1 \(pid \d+\) was killed by SIGKILL; stopped the other "
                     r"workers", rest)
    for pid in pids.values():  # none left waiting in a collective
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    saved = max(int(f.split("-")[1].split(".")[0]) for f in os.listdir(tmp_path / "job")
                if f.startswith("model.ckpt-") and f.endswith(".index"))
    again = subprocess.run(launch_cmd(2, tmp_path / "job", rank_config(rank_data, **{
        "train.max_steps": saved + 2, "train.log_every": 1, **steady})),
        capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[worker 0] resumed from" in again.stderr and f"at step {saved}" in again.stderr
    assert "[worker 1] resumed from" in again.stderr


# --------------------------------------------------------------------------- precision


def test_mixed_precision_trains_and_scores_close_to_fp32(rank_data, stage_one, tmp_path):
    from rankiqa.run import device as device_lib
    from rankiqa.serve import predict
    from rankiqa.train import loop, rank

    config = device_lib.session_config("mixed")
    rewrites = config.graph_options.rewrite_options
    assert rewrites.auto_mixed_precision_onednn_bfloat16 == 1  # ON, on this CPU-only machine
    assert device_lib.resolve_precision("fp32") == "fp32"
    with open("/proc/cpuinfo") as f:  # read here, not through the code under test
        flags = set(f.read().split())
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert device_lib.resolve_precision("auto") == ("mixed" if native else "fp32")
    with pytest.raises(InputError, match="unknown precision 'half'"):
        device_lib.resolve_precision("half")
    cfg = config_lib.load(config_lib.RankConfig, None, tiny_rank_overrides(
        rank_data, **{"train.precision": "mixed", "train.max_steps": 4}))
    lines = []
    result = rank.train(cfg, str(tmp_path / "mixed"), device="cpu", log=lines.append)
    assert "precision mixed" in lines[0] and np.isfinite(result["loss"])
    # the NaN guard still names the steps
    cfg = config_lib.load(config_lib.RankConfig, None, tiny_rank_overrides(
        rank_data, **{"train.precision": "mixed", "train.max_steps": 8, "train.margin": ".nan"}))
    with pytest.raises(loop.TrainingDiverged, match=r"loss became nan between step 0 .* and "
                                                    r"step 1; no checkpoint was written yet"):
        rank.train(cfg, str(tmp_path / "diverged"), device="cpu", log=lambda line: None)
    photos = [os.path.join(os.path.dirname(rank_data), "images")]
    fp32, _, _ = predict.predict(photos, stage_one, device="cpu")
    mixed, _, _ = predict.predict(photos, stage_one, device="cpu", precision="mixed")
    a, b = (np.array([r["score"] for r in rows]) for rows in (fp32, mixed))
    assert np.abs(a - b).max() < 0.05 * (np.abs(a).max() + 1e-6) + 0.01
    if native:  # oneDNN computes in bfloat16 here: the rewrite must have changed the numbers
        assert not np.array_equal(a, b)
    # (without bfloat16 units TensorFlow leaves the graph in float32: nothing to show)


# --------------------------------------------------------------------------- cluster recipes

ROOT = os.path.join(os.path.dirname(__file__), "..")


def fake_commands(tmp_path, **scripts):
    """A folder of stand-in executables to put first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in scripts.items():
        (folder / name).write_text("#!/bin/bash\n" + body + "\n")
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def printed_configs(output):
    return [cluster.parse(line) for line in output.splitlines() if line.startswith("{")]


def test_slurm_recipe_gives_each_node_its_task(tmp_path):
    env = fake_commands(
        tmp_path, scontrol="printf 'gpu-a\\ngpu-b\\n'",
        srun='shift; for i in 0 1; do SLURM_PROCID=$i "$@"; done',  # two tasks, in turn
        rankiqa='echo "$TF_CONFIG"; echo "args: $*"')
    out = subprocess.run(["bash", os.path.join(ROOT, "deploy/slurm/rankiqa-train.sbatch"),
                          "rank.yaml", "/shared/rank", "--set", "train.max_steps=9"],
                         env=dict(env, SLURM_JOB_NODELIST="gpu-[a-b]"), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    configs = printed_configs(out.stdout)
    assert [c.rank for c in configs] == [0, 1]
    assert configs[0].addresses == ("gpu-a:23456", "gpu-b:23456")
    assert "args: train-rank --config rank.yaml --train-dir /shared/rank --strategy " \
           "multi_worker --device gpu --set train.max_steps=9" in out.stdout


def test_kubernetes_recipe_gives_each_pod_its_task(tmp_path):
    import yaml

    with open(os.path.join(ROOT, "deploy/kubernetes/rankiqa-train.yaml")) as f:
        service, job = yaml.safe_load_all(f)
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == job["metadata"]["name"]
    assert job["spec"]["parallelism"] == job["spec"]["completions"]
    script = pod["containers"][0]["args"][0]
    env = fake_commands(tmp_path, rankiqa='echo "$TF_CONFIG"')
    configs = []
    for index in range(job["spec"]["completions"]):
        out = subprocess.run(["bash", "-c", script], env=dict(env, JOB_COMPLETION_INDEX=str(index)),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        configs += printed_configs(out.stdout)
    assert [c.rank for c in configs] == [0, 1]
    assert configs[1].addresses == ("rankiqa-train-0.rankiqa-train:23456",
                                    "rankiqa-train-1.rankiqa-train:23456")
