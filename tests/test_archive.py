"""Scoring at archive scale: predict --from-list (chunks, resumable, shards) and merge-scores."""

import csv
import os
import re

import pytest
from click.testing import CliRunner

from rankiqa.cli import main
from rankiqa.serve import archive


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def rows(path):
    return list(csv.reader(open(path, newline="")))


@pytest.fixture
def photo_list(photo_dir, tmp_path):
    photos = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))
    path = tmp_path / "photos.txt"
    path.write_text("\n".join(photos[:3]) + "\n\n" + "\n".join(photos[3:]) + "\n")  # a blank line
    return path, photos


def test_a_list_scores_as_predict_does_resumes_and_shards(stage_one, photo_list, tmp_path,
                                                          monkeypatch):
    listing, photos = photo_list
    monkeypatch.setattr(archive, "CHUNK", 2)  # several chunks from a few photos
    whole = tmp_path / "whole.csv"
    result = invoke("predict", "--from-list", listing, "--model", stage_one, "--output", whole,
                    "--engine", "tensorflow")
    assert result.exit_code == 0, result.output
    assert not os.path.exists(f"{whole}{archive.UNFINISHED}")
    expected = invoke("predict", *photos, "--model", stage_one, "--engine", "tensorflow")
    assert rows(whole) == list(csv.reader(expected.stdout.splitlines()))  # predict's rows
    # as a kill leaves it: two rows, then half of the third
    partial = tmp_path / "partial.csv"
    data = open(whole, "rb").read().split(b"\n")
    open(f"{partial}{archive.UNFINISHED}", "wb").write(b"\n".join(data[:3]) + b"\n" + data[3][:9])
    result = invoke("predict", "--from-list", listing, "--model", stage_one, "--output",
                    partial, "--engine", "tensorflow")
    assert result.exit_code == 1 and "pass --resume to continue it" in result.stderr
    result = invoke("predict", "--from-list", listing, "--model", stage_one, "--output",
                    partial, "--engine", "tensorflow", "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming: 2 of 6 rows already" in result.stderr
    assert open(partial, "rb").read() == open(whole, "rb").read()  # to the bit, in order
    # a finished output resumed again: nothing to add, nothing lost
    result = invoke("predict", "--from-list", listing, "--model", stage_one, "--output",
                    partial, "--engine", "tensorflow", "--resume")
    assert result.exit_code == 0 and "scored 0 images" in result.stderr
    assert open(partial, "rb").read() == open(whole, "rb").read()
    # two shards, merged in the list's order: the single run's file
    for k in (0, 1):
        result = invoke("predict", "--from-list", listing, "--model", stage_one, "--shard",
                        f"{k}/2", "--output", tmp_path / f"s{k}.csv", "--engine", "tensorflow")
        assert result.exit_code == 0, result.output
    assert [r[0] for r in rows(tmp_path / "s1.csv")[1:]] == photos[2:4]  # chunks of 2
    result = invoke("merge-scores", tmp_path / "s0.csv", tmp_path / "s1.csv", "--from-list",
                    listing, "--output", tmp_path / "merged.csv")
    assert result.exit_code == 0, result.output
    assert open(tmp_path / "merged.csv", "rb").read() == open(whole, "rb").read()


def test_archive_bad_input_is_one_line(stage_one, photo_list, tmp_path):
    listing, photos = photo_list
    for args, message in (
            (["--from-list", listing, "--shard", "2/2", "--output", tmp_path / "o.csv"],
             "--shard '2/2': expected K/N with 0 <= K < N"),
            (["--from-list", listing], "give --output FILE"),
            (["--from-list", listing, "--output", tmp_path / "o.json", "--format", "json"],
             "give --output FILE (csv)"),
            ([photos[0], "--from-list", listing, "--output", tmp_path / "o.csv"],
             "give it instead of PHOTOS"),
            (["--resume", photos[0]], "go with --from-list FILE"),
            (["--from-list", tmp_path / "none.txt", "--output", tmp_path / "o.csv"],
             "none.txt does not exist")):
        result = invoke("predict", *args, "--model", stage_one)
        assert result.exit_code in (1, 2) and message in result.stderr, (args, result.output)
    (tmp_path / "blank.txt").write_text("\n\n")
    result = invoke("predict", "--from-list", tmp_path / "blank.txt", "--output",
                    tmp_path / "b.csv", "--model", stage_one)
    assert result.exit_code == 1 and "names no path" in result.stderr
    # more shards than chunks: an empty shard's file holds its header, and the job succeeds
    result = invoke("predict", "--from-list", listing, "--shard", "5/6", "--output",
                    tmp_path / "empty.csv", "--model", stage_one, "--engine", "tensorflow")
    assert result.exit_code == 0 and "holds no chunk" in result.stderr
    assert rows(tmp_path / "empty.csv") == [archive.HEADER]
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    result = invoke("predict", "--from-list", listing, "--model", stage_one, "--output",
                    tmp_path / "notes.csv", "--resume")
    assert result.exit_code == 1 and "is not a predict output" in result.stderr
    assert (tmp_path / "notes.csv").read_text() == "a,b\n1,2\n"  # nothing lost
    one = tmp_path / "one.csv"
    assert invoke("predict", "--from-list", listing, "--model", stage_one, "--output", one,
                  "--engine", "tensorflow").exit_code == 0
    result = invoke("merge-scores", one, one, "--output", tmp_path / "m.csv")
    assert result.exit_code == 1 and "shards must not overlap" in result.stderr
    (tmp_path / "short.txt").write_text(photos[0] + "\n")
    result = invoke("merge-scores", one, "--from-list", tmp_path / "short.txt", "--output",
                    tmp_path / "m.csv")
    assert result.exit_code == 1 and "5 scored paths are not in" in result.stderr
    assert not (tmp_path / "m.csv").exists()


def test_the_job_array_recipes_give_each_task_its_shard(tmp_path):
    """deploy/'s Slurm array and Kubernetes Indexed Job, run with a stand-in rankiqa that
    prints its arguments: task K of N scores shard K/N into its own resumable file."""
    import subprocess

    import yaml

    root = os.path.join(os.path.dirname(__file__), "..")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rankiqa").write_text('#!/usr/bin/env bash\necho "args: $*"\n')
    (bin_dir / "rankiqa").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", os.path.join(root, "deploy/slurm/rankiqa-score.sbatch"),
                          "photos.txt", str(tmp_path / "scores"), "--engine", "onnx"],
                         env={**env, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "16"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"args: predict --from-list photos.txt --shard 3/16 --resume "
                                  f"--output {tmp_path}/scores/scores_3.csv --engine onnx")
    with open(os.path.join(root, "deploy/kubernetes/rankiqa-score.yaml")) as f:
        job = yaml.safe_load(f)
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    shards = int(re.search(r"SHARDS=(\d+)", script).group(1))
    assert shards == job["spec"]["completions"]
    script = script.replace("/data/", f"{tmp_path}/data/")
    out = subprocess.run(["bash", "-c", script], env={**env, "JOB_COMPLETION_INDEX": "5"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"--shard 5/{shards} --resume --output {tmp_path}/data/scores/scores_5.csv" in out.stdout
