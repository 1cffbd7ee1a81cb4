"""Active labelling: the strategies (numpy) and `rankiqa suggest-labels` on tiny data."""

import csv
import io
import os

import numpy as np
import pytest
from click.testing import CliRunner

from rankiqa.serve import active
from rankiqa.cli import main
from rankiqa.errors import InputError


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_k_centre_covers_the_pool_away_from_what_is_labelled():
    # two tight clusters and one far point; the labelled photo sits in the first cluster
    pool = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0], [0.0, 50.0]])
    picks, reach = active.k_centre(pool, np.array([[0.05, 0.0]]), 3)
    assert picks[:2] == [4, 3] and reach[0] == pytest.approx(np.hypot(0.05, 50))
    assert len(set(picks)) == 3 and reach == sorted(reach, reverse=True)
    # nothing labelled: the most typical photo first (nearest the mean), then outwards
    picks, reach = active.k_centre(pool, np.zeros((0, 2)), 2)
    assert picks[0] == int(np.argmin(np.linalg.norm(pool - pool.mean(0), axis=1)))
    assert reach[0] == 0 and picks[1] == 4
    # weights: a less sure photo wins over a slightly farther sure one
    picks, _ = active.k_centre(np.array([[0.0], [10.0], [9.0]]), np.array([[0.0]]), 1,
                               weights=[1.0, 0.5, 1.5])
    assert picks == [2]


def test_every_strategy_ranks_distinct_photos_with_a_reason():
    rng = np.random.default_rng(0)
    features, spread = rng.normal(size=(30, 4)), rng.uniform(size=30)
    for strategy in active.STRATEGIES:
        picks = active.choose(strategy, 5, 30, features=features, labelled=features[:0],
                              spread=spread)
        assert len({k for k, _ in picks}) == 5 and all(reason for _, reason in picks)
    # typical: one photo per cluster, the densest, clusters without a labelled photo first
    blobs = np.concatenate([rng.normal(size=(10, 4)) * 0.1 + centre for centre in
                            (0.0, 5.0, 10.0)])
    picks, _ = active.typical(blobs, blobs[:1], 2)
    assert sorted(k // 10 for k in picks) == [1, 2]
    by_doubt = [k for k, _ in active.choose("uncertainty", 3, 30, spread=spread)]
    assert by_doubt == list(np.argsort(-spread)[:3])
    assert len(active.choose("random", 50, 30)) == 30  # a pool smaller than the count: all
    with pytest.raises(InputError, match="unknown strategy 'best'"):
        active.choose("best", 5, 30)


def rows_of(result):
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_suggest_labels_leaves_out_what_is_labelled_and_says_why(stage_one, photo_dir,
                                                                   tmp_path):
    photos = sorted(os.listdir(photo_dir))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score\n" + "".join(f"{os.path.join(photo_dir, p)},0.5\n"
                                                for p in photos[:2]))
    # the same folder twice and one photo under another spelling: each photo once
    again = os.path.join(photo_dir, ".", photos[3])
    result = invoke("suggest-labels", photo_dir, photo_dir, again, "--labels", labels,
                    "--model", stage_one, "--count", 3, "--strategy", "diversity")
    rows = rows_of(result)
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    chosen = {os.path.basename(r["path"]) for r in rows}
    assert len(chosen) == 3 and not chosen & set(photos[:2])
    assert all(r["reason"].startswith("feature distance ") for r in rows)
    # one line for them all, not one per labelled photo
    assert result.stderr.count("already labelled in") == 1
    assert "left out: 2 photos already labelled in" in result.stderr
    # one label, a pool smaller than --count: every unlabelled photo, with a notice
    labels.write_text(f"image,mos\n{os.path.join(photo_dir, photos[0])},0.5\n")
    for strategy in ("uncertainty", "combined", "typical", "random"):
        result = invoke("suggest-labels", photo_dir, "--labels", labels, "--model", stage_one,
                        "--count", 10, "--strategy", strategy)
        rows = rows_of(result)
        assert len(rows) == 5 and "fewer than --count 10: all of them are ranked" in result.stderr
    assert rows_of(invoke("suggest-labels", photo_dir, "--labels", labels, "--model", stage_one,
                          "--count", 10, "--strategy", "random")) == rows  # seeded
    # no label at all: the most typical photo first
    rows = rows_of(invoke("suggest-labels", photo_dir, "--model", stage_one, "--count", 2,
                          "--strategy", "diversity"))
    assert rows[0]["reason"] == "the most typical photo (nothing labelled yet)"
    # the default is the measured best (docs/label-efficiency.md): typical
    rows = rows_of(invoke("suggest-labels", photo_dir, "--model", stage_one, "--count", 2))
    assert all(r["reason"].startswith(("the most typical of ", "alone in a cluster"))
               for r in rows)


def test_suggest_labels_refuses_with_one_line(stage_one, photo_dir, tmp_path):
    every = tmp_path / "every.csv"
    every.write_text("path,score\n" + "".join(f"{os.path.join(photo_dir, p)},0.5\n"
                                               for p in os.listdir(photo_dir)))
    result = invoke("suggest-labels", photo_dir, "--labels", every, "--model", stage_one)
    assert result.exit_code == 1 and result.stderr.splitlines()[-1].startswith(
        "error: no unlabelled photo to choose from: 6 photos found")
    result = invoke("suggest-labels", photo_dir, "--labels", tmp_path / "none.csv")
    assert result.exit_code == 1 and "label file" in result.stderr and "does not exist" in (
        result.stderr)
    (tmp_path / "empty").mkdir()
    result = invoke("suggest-labels", tmp_path / "empty", "--model", stage_one)
    assert result.exit_code == 1 and "no unlabelled photo to choose from" in result.stderr
    # an output never replaces an input, and an earlier one only with --force
    target = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    result = invoke("suggest-labels", photo_dir, "--model", stage_one, "--output", target)
    assert result.exit_code == 1 and "input" in result.stderr
    (tmp_path / "out.csv").write_text("earlier\n")
    result = invoke("suggest-labels", photo_dir, "--model", stage_one, "--output",
                    tmp_path / "out.csv")
    assert result.exit_code == 1 and (tmp_path / "out.csv").read_text() == "earlier\n"
    assert "Traceback" not in result.output


def test_typical_fills_the_count_with_duplicate_photos_and_flat_spreads_are_refused():
    same = np.ones((5, 4))  # five byte-identical photos: one cluster, then k-centre's fill
    picks = active.choose("typical", 3, 5, features=same, labelled=same[:0])
    assert len({k for k, _ in picks}) == 3
    assert [reason for _, reason in picks][1:] == [
        "fills a gap: farthest from every labelled and chosen photo"] * 2
    for strategy in ("uncertainty", "combined"):  # a one-view model: every spread 0
        with pytest.raises(InputError, match=f"--strategy {strategy}: the model's views agree "
                                             "on every photo"):
            active.choose(strategy, 3, 5, features=np.eye(5), labelled=np.zeros((0, 5)),
                          spread=np.zeros(5))


def test_suggest_labels_reads_only_the_path_column_of_its_label_file(stage_one, photo_dir,
                                                                    tmp_path):
    photos = sorted(os.path.join(photo_dir, p) for p in os.listdir(photo_dir))
    files = {"scale15.csv": "file,rating\n" + "".join(f"{p},{3 + k}\n"
                                                       for k, p in enumerate(photos[:2])),
             "header.csv": "path\n" + "".join(f"{p}\n" for p in photos[:2]),
             "plain.txt": "".join(f"{p}\n" for p in photos[:2])}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        result = invoke("suggest-labels", photo_dir, "--labels", tmp_path / name, "--model",
                        stage_one, "--count", 2, "--strategy", "random")
        chosen = {r["path"] for r in rows_of(result)}
        assert len(chosen) == 2 and not chosen & set(photos[:2]), name
        assert "left out: 2 photos already labelled in" in result.stderr
    (tmp_path / "own.csv").write_text("photo_id;score\nx.png;1\n")
    result = invoke("suggest-labels", photo_dir, "--labels", tmp_path / "own.csv")
    assert result.exit_code == 1 and "separated by semicolons, not commas" in result.stderr
    (tmp_path / "own.csv").write_text("photo_id,score\n" + f"{photos[0]},1\n")
    result = invoke("suggest-labels", photo_dir, "--labels", tmp_path / "own.csv",
                    "--path-column", "photo_id", "--model", stage_one, "--count", 1)
    assert "left out: 1 photo already labelled in" in result.stderr


def test_suggest_labels_never_writes_over_its_model_and_quotes_odd_names(stage_one, photo_dir,
                                                                        tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stage_one, run)
    before = {n: (run / n).read_bytes() for n in os.listdir(run) if (run / n).is_file()}
    index = next(n for n in before if n.endswith(".index"))
    for out in (run / "rankiqa.json", run / index, run / "suggestions.csv"):
        result = invoke("suggest-labels", photo_dir, "--model", run, "--count", 1,
                        "--output", out, "--force")
        assert result.exit_code == 1 and "is, holds or lies inside the input" in result.stderr
    assert {n: (run / n).read_bytes() for n in before} == before
    names = tmp_path / "names"
    names.mkdir()
    first = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    for name in ("cr\rname.png", "ok.png"):
        shutil.copy(first, names / name)
    result = invoke("suggest-labels", names, "--model", stage_one, "--count", 2,
                    "--strategy", "random", "--output", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(open(tmp_path / "s.csv", newline="")))
    assert len(rows) == 3 and {os.path.basename(r[1]) for r in rows[1:]} == {
        "cr\rname.png", "ok.png"}
    result = invoke("suggest-labels", tmp_path / "names", "--model", run / "w.npz")
    assert result.exit_code == 1 and "not an exported .npz" in result.stderr
    (tmp_path / "empty").mkdir()
    result = invoke("suggest-labels", tmp_path / "empty", "--model", stage_one)
    assert "no photo found under the paths given" in result.stderr and "None" not in result.stderr
