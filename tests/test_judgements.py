"""People's comparisons: the judgement file (`rankiqa.data.judgements`) and their scaling into
scores (`rankiqa.judge.thurstone`, `rankiqa scale`)."""

import csv
import io
import os

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from rankiqa.cli import main
from rankiqa.data import judgements, mos
from rankiqa.data.lists import ListError
from rankiqa.judge import thurstone


def collection(tmp_path, count=8):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(count):
        (folder / f"p{k}.png").write_bytes(b"not read")
    return [str(folder / f"p{k}.png") for k in range(count)]


def answer(path, left, right, choice, rater="ana", time="2026-12-07T10:31:02Z"):
    root = os.path.dirname(os.path.abspath(path))
    judgements.append(path, [os.path.relpath(left, root), os.path.relpath(right, root), choice,
                             rater, time], judgements.PAIR_HEADER)


def test_answers_are_appended_and_read_back_with_paths_from_the_files_folder(tmp_path):
    photos = collection(tmp_path)
    path = str(tmp_path / "judgements.csv")
    answer(path, photos[0], photos[1], "left")
    answer(path, photos[2], photos[0], "tie", rater="ben")
    text = open(path).read().splitlines()
    assert text == ["left,right,choice,rater,time",
                    "photos/p0.png,photos/p1.png,left,ana,2026-12-07T10:31:02Z",
                    "photos/p2.png,photos/p0.png,tie,ben,2026-12-07T10:31:02Z"]
    read = judgements.read_pairs(path, photos)
    assert [(g.left, g.right, g.outcome) for g in read.judgements] == [
        (photos[0], photos[1], 1.0), (photos[2], photos[0], 0.5)]
    assert read.problems() == []


def test_every_bad_line_is_counted_by_number_and_nothing_else_is_lost(tmp_path):
    photos = collection(tmp_path)
    path = tmp_path / "judgements.csv"
    lines = ["left,right,choice,rater,time",
             "photos/p0.png,photos/p1.png,left,ana,2026-12-07T10:31:02Z",
             "photos/p0.png,photos/p1.png,sideways,ana,2026-12-07T10:31:02Z",  # 3: bad choice
             "photos/p0.png,photos/p0.png,left,ana,2026-12-07T10:31:02Z",  # 4: a self-pair
             "photos/p0.png,elsewhere/x.png,left,ana,2026-12-07T10:31:02Z",  # 5: not ours
             "photos/p1.png,photos/p0.png,left,ana,2026-12-07T10:31:05Z",  # 6: ana contradicts 2
             "photos/p2.png,photos/p3.png,right,ben,yesterday",  # 7: bad time
             "photos/p2.png,photos/p3"]  # 8: cut by a crash mid-write
    path.write_text("\n".join(lines))
    read = judgements.read_pairs(str(path), photos)
    assert len(read.judgements) == 2
    assert [n for n, _ in read.damaged] == [3, 7, 8] and read.self_pairs == [4]
    assert read.unknown[0][0] == 5 and len(read.contradictions) == 1
    problems = read.problems()
    assert problems[0].startswith("3 damaged lines left out (line 3, 7, 8: choice 'sideways'")
    assert "1 answers compare a photo with itself" in problems[1]
    assert "1 answers name photos not in the collection" in problems[2]
    assert problems[3].startswith("1 pairs were answered differently by the same rater")


def test_a_file_of_another_collection_or_format_is_refused(tmp_path):
    photos = collection(tmp_path)
    other = tmp_path / "other.csv"
    other.write_text("left,right,choice,rater,time\n"
                     "x/a.png,x/b.png,left,ana,2026-12-07T10:31:02Z\n")
    with pytest.raises(ListError, match="none names a photo of this collection"):
        judgements.read_pairs(str(other), photos)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score\nphotos/p0.png,3\n")
    with pytest.raises(ListError, match="not a judgement file: its first line must be "
                                        "left,right,choice,rater,time"):
        judgements.read_pairs(str(labels))
    with pytest.raises(ListError, match="does not exist"):
        judgements.read_pairs(str(tmp_path / "none.csv"))


def simulated(true, answers, rng, tie_within=0.0):
    """Thurstone observers: each answer prefers i to j with probability Phi((s_i - s_j) / SIGMA)."""
    out = []
    for _ in range(answers):
        i, j = rng.choice(len(true), 2, replace=False)
        seen = (true[i] - true[j]) / thurstone.SIGMA + rng.normal()
        choice = "tie" if abs(seen) < tie_within else ("left" if seen > 0 else "right")
        out.append(judgements.Judgement(f"p{i}", f"p{j}", choice, "sim", "t"))
    return out


def test_thurstone_scaling_recovers_the_observers_scale_with_honest_intervals(rng):
    true = np.linspace(-2, 2, 8)  # JOD
    scaled = thurstone.scale(simulated(true, 2000, rng, tie_within=0.1), bootstrap=100)
    order = [int(p[1:]) for p in scaled.photos]
    assert stats.spearmanr(scaled.scores, true[order])[0] > 0.97
    centred = true[order] - true.mean()
    np.testing.assert_allclose(scaled.scores, centred, atol=0.3)  # the prior shrinks a little
    inside = (scaled.low <= centred + 0.15) & (centred - 0.15 <= scaled.high)
    assert inside.mean() >= 0.75 and np.all(scaled.low <= scaled.high)
    assert scaled.answers.sum() == 4000
    # a photo that always wins stays finite; the prior holds it
    always = [judgements.Judgement("a", "b", "left", "r", "t")] * 20
    top = thurstone.scale(always, bootstrap=0)
    assert np.all(np.isfinite(top.scores)) and top.scores[0] > top.scores[1]


def test_scale_writes_a_label_file_finetune_reads(tmp_path):
    photos = collection(tmp_path, 5)
    path = str(tmp_path / "judgements.csv")
    rng = np.random.default_rng(1)
    for g in simulated(np.arange(5.0), 200, rng):
        answer(path, photos[int(g.left[1:])], photos[int(g.right[1:])], g.choice)
    out = tmp_path / "labels" / "scores.csv"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["scale", path, "--photos", str(tmp_path / "photos"),
                                       "--output", str(out), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["path"] for r in rows] == [f"../photos/p{k}.png" for k in range(5)]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)  # the observers' order
    line = [l for l in result.output.splitlines() if l.startswith("scaled 5 photos")][0]
    score_range = line.split("data.score_range=")[1].rstrip("'")
    items = mos.read_dataset("csv", str(out), score_range=tuple(
        float(v) for v in score_range.strip("[]").split(",")))
    assert [os.path.normpath(it.path) for it in items] == photos
    result = CliRunner().invoke(main, ["scale", path, "--output", str(out)])
    assert result.exit_code == 1 and "pass --force" in result.output


def test_scale_with_a_models_prior_is_the_posterior_mean_the_pairs_were_chosen_under(
        stage_one, photo_dir, tmp_path, rng):
    from rankiqa import cli
    from rankiqa.judge import pairs

    photos = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))
    path = str(tmp_path / "judgements.csv")
    for k in range(12):
        answer(path, photos[k % 6], photos[(k + 1) % 6], "left" if k % 3 else "right")
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(main, ["scale", path, "--model", stage_one, "--output", str(out),
                                       "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert "JOD, the model as the prior" in result.output
    got = {os.path.normpath(os.path.join(tmp_path, r["path"])): float(r["score"])
           for r in csv.DictReader(open(out))}
    named = sorted(got)
    mean, sd = pairs.model_prior(cli.model_scores(stage_one, named), 0.7)
    read = judgements.read_pairs(path).judgements
    want = thurstone.scale(read, bootstrap=0, prior_sd=sd, prior=dict(zip(named, mean)))
    np.testing.assert_allclose([got[p] for p in want.photos], want.scores, atol=1e-4)
    plain = thurstone.scale(read, bootstrap=0)
    assert not np.allclose(want.scores, plain.scores, atol=1e-3)  # the prior moved them
