"""`rankiqa teach` (teacher targets, cross-fitted) and the student's third signal."""

import csv
import dataclasses
import os

import numpy as np
import pytest

from rankiqa.preprocessing import preprocess
from rankiqa.data import teacher as teacher_lib
from rankiqa.errors import InputError
from rankiqa_testkit import finetune_config, model_values


def test_a_pyramid_view_spec_places_the_pixels_pyramid_views_do(rng):
    for h, w in [(512, 512), (513, 700), (300, 225), (100, 77), (1000, 333)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for count in (1, 2, 3, 4):
            pyramid = preprocess.pyramid_crops(image, 64, count)
            for k in range(count):
                view = preprocess.placed_view(image, 64, k / max(1, count - 1))
                np.testing.assert_array_equal(view, pyramid[k])
    image = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
    corner = preprocess.placed_view(image, 64, 0.0, y=1.0, x=0.0, flip=True)
    np.testing.assert_array_equal(corner, image[16:80, 0:64][:, ::-1])


def test_view_specs_start_with_the_own_views_and_repeat_per_photo():
    from rankiqa.train import teach

    specs = teach.view_specs(3, 2, seed=0, index=7)
    assert specs[:3] == [(0.0, 0.5, 0.5, 0), (0.5, 0.5, 0.5, 0), (1.0, 0.5, 0.5, 0)]
    assert len(specs) == 5 and all(0 <= v <= 1 for s in specs[3:] for v in s)
    assert teach.view_specs(3, 2, seed=0, index=7) == specs  # made again from (seed, index)
    assert teach.view_specs(3, 2, seed=0, index=8)[3:] != specs[3:]
    assert teach.view_specs(3, 2, seed=1, index=7)[3:] != specs[3:]


@pytest.mark.parametrize("alphas", [(1.0,), (0.1, 1.0, 10.0)])
def test_cross_fitting_scores_each_photo_by_a_head_that_never_saw_it(rng, alphas):
    from rankiqa.train import teach

    photos, views, d = 40, 4, 6
    features = rng.normal(size=(photos, views, d))
    targets = features[:, :2].mean(axis=1) @ rng.normal(size=d) + 0.1 * rng.normal(size=photos)
    scores, fold, report, _ = teach.cross_fit(features, targets, own=2, folds=4, seed=0,
                                           alphas=alphas)
    assert scores.shape == (photos, views) and sorted(set(fold)) == [0, 1, 2, 3]
    assert report["oof_srocc"] > 0.8  # the features do predict the targets
    assert len(report["alphas"]) == 4 and set(report["alphas"]) <= set(alphas)
    moved = targets.copy()
    moved[0] += 100.0  # photo 0's own label: its own scores must not move, the others' do
    again, _, _, _ = teach.cross_fit(features, moved, own=2, folds=4, seed=0, alphas=alphas)
    np.testing.assert_allclose(again[0], scores[0], rtol=1e-9, atol=1e-9)
    assert not np.allclose(again[fold != fold[0]], scores[fold != fold[0]])
    np.testing.assert_allclose(again[fold == fold[0]], scores[fold == fold[0]], atol=1e-9)


def test_a_given_penalty_fits_as_the_probe_fits_with_it(rng):
    from rankiqa.train import probe

    x = rng.normal(size=(60, 5)) * [1, 2, 3, 0.5, 10]
    y = x @ rng.normal(size=5) + rng.normal(size=60)
    fixed = probe.fit_ridge_at(x, y, 3.0)
    fitted = probe.fit_ridge(x, y, (3.0,), folds=3)
    for key in ("mean", "std", "weights", "bias"):
        np.testing.assert_allclose(fixed[key], fitted[key], rtol=1e-8, atol=1e-10)


def teach_tiny(finetuned, label_file, out, extra_views=1, lines=None, **extra):
    from rankiqa.train import teach

    cfg = finetune_config(label_file, **extra)
    log = (lines.append if lines is not None else lambda line: None)
    return teach.teach(cfg.data, str(out), model=finetuned, extra_views=extra_views, folds=2,
                       device="cpu", log=log)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_teach_scores_every_training_view_never_a_validation_photo(finetuned, label_file,
                                                                   tmp_path):
    from rankiqa.data import mos

    report = teach_tiny(finetuned, label_file, tmp_path / "t", extra_views=2)
    rows = read_rows(tmp_path / "t" / "teacher.csv")
    parts = mos.load_splits(finetune_config(label_file).data)
    train = {it.path for it in parts["train"]}
    assert {r["path"] for r in rows} == train
    assert len(rows) == report["rows"] == len(train) * (3 + 2)  # 3 own pyramid views + 2
    assert [r["view"] for r in rows[:5]] == ["0", "1", "2", "3", "4"]
    assert all(np.isfinite(float(r["score"])) for r in rows)
    assert set(r["fold"] for r in rows) == {"0", "1"}
    paths, specs, scores = teacher_lib.read_table(str(tmp_path / "t" / "teacher.csv"))
    assert specs.shape == (len(rows), 4) and len(paths) == len(scores) == len(rows)


def test_teach_resumes_its_shards_and_refuses_another_plan(finetuned, label_file, tmp_path,
                                                           monkeypatch):
    from rankiqa.train import teach

    monkeypatch.setattr(teach, "SHARD_PHOTOS", 16)
    out = tmp_path / "t"
    teach_tiny(finetuned, label_file, out)
    first = (out / "teacher.csv").read_text()
    shards = sorted(os.listdir(out / "features"))
    assert len(shards) > 1
    os.remove(out / "features" / shards[-1])  # a kill before the last shard was written
    os.remove(out / "teacher.csv")
    lines = []
    teach_tiny(finetuned, label_file, out, lines=lines)
    assert any(f"resuming: {len(shards) - 1} of {len(shards)}" in line for line in lines)
    assert (out / "teacher.csv").read_text() == first
    with pytest.raises(InputError, match="extra_views"):
        teach_tiny(finetuned, label_file, out, extra_views=3)


def test_exclude_leaves_listed_photos_out(finetuned, label_file, tmp_path):
    from rankiqa.data import mos

    train = [it.path for it in mos.load_splits(finetune_config(label_file).data)["train"]]
    listed = tmp_path / "ladder_photos.txt"
    listed.write_text("\n".join(train[:3]) + "\n")
    from rankiqa.train import teach

    teach.teach(finetune_config(label_file).data, str(tmp_path / "t"), model=finetuned,
                extra_views=0, exclude_files=[str(listed)], folds=2, device="cpu",
                log=lambda line: None)
    paths = {r["path"] for r in read_rows(tmp_path / "t" / "teacher.csv")}
    assert paths == set(train[3:])


@pytest.mark.parametrize("content, message", [
    ("path,scale,y,x,flip\na.png,0,0.5,0.5,0\n", "no column score"),
    ("path,scale,y,x,flip,score\na.png,0,0.5,0.5,0,high\n", "line 2: .* must be numbers"),
    ("path,scale,y,x,flip,score\na.png,1.5,0.5,0.5,0,0.3\n", "line 2: .* lie in"),
    ("path,scale,y,x,flip,score\na.png,0,0.5,0.5,0,nan\n", "line 2: .* finite"),
    ("path,scale,y,x,flip,score\n", "no views"),
])
def test_a_bad_teacher_table_is_refused_with_its_line(tmp_path, content, message):
    table = tmp_path / "teacher.csv"
    table.write_text(content)
    with pytest.raises(InputError, match=message):
        teacher_lib.read_table(str(table))
    with pytest.raises(InputError, match="does not exist"):
        teacher_lib.read_table(str(tmp_path / "none.csv"))


def test_the_student_learns_from_the_teacher_and_not_from_validation_photos(
        finetuned, label_file, stage_one, tmp_path):
    from rankiqa.data import mos
    from rankiqa.train import finetune

    teach_tiny(finetuned, label_file, tmp_path / "t")
    table = str(tmp_path / "t" / "teacher.csv")
    runs = {}
    # the MOS regression and weight decay off: only the teacher can move the body
    for weight in (0.0, 1.0):
        lines = []
        train_dir = tmp_path / f"student_{weight:g}"
        finetune.train(finetune_config(label_file, stage_one, **{
            "signals.teacher_table": table, "signals.teacher_weight": weight,
            "signals.mos_weight": 0.0, "signals.teacher_views_per_batch": 4,
            "net.weight_decay": 0.0, "train.max_steps": 2}), str(train_dir), device="cpu",
            log=lines.append)
        runs[weight] = model_values(str(train_dir))
        assert any("teacher's scores of" in line for line in lines)
        assert any("teacher_loss" in line for line in lines)
    body = [n for n in runs[0.0] if "/logits/" not in n and "moving_" not in n]
    assert all(np.array_equal(runs[0.0][n], model_values(stage_one)[n]) for n in body)
    assert any(not np.array_equal(runs[1.0][n], runs[0.0][n]) for n in body)

    rows = read_rows(table)
    val = mos.load_splits(finetune_config(label_file).data)["val"][0].path
    rows[0]["path"] = val
    leaked = tmp_path / "leaked.csv"
    with open(leaked, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(InputError, match="validation or test part"):
        finetune.train(finetune_config(label_file, stage_one, **{
            "signals.teacher_table": str(leaked)}), str(tmp_path / "leak"), device="cpu",
            log=lambda line: None)


def rank_data_of(references, out):
    """Rank data (blur and noise, 5 levels) of the photos `references` lists."""
    from rankiqa.data.generate import make_rank_data

    listed = out.parent / f"{out.name}_references.txt"
    listed.write_text("\n".join(references) + "\n")
    return make_rank_data(str(listed), str(out), families=("gblur", "wn"), seed=0)["rank_list"]


def test_rank_images_are_scored_by_the_head_of_their_reference_photos_fold(
        finetuned, label_file, photo_dir, tmp_path):
    from rankiqa.data import generate, lists, mos
    from rankiqa.train import teach

    cfg = finetune_config(label_file)
    train = [it.path for it in mos.load_splits(cfg.data)["train"]]
    outside = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])  # a Kodak-like photo
    rank_list = rank_data_of([train[0], train[1], outside], tmp_path / "rank")
    out = tmp_path / "t"
    teach.teach(cfg.data, str(out), model=finetuned, extra_views=1, folds=2, device="cpu",
                log=lambda line: None)
    photo_rows = read_rows(out / "teacher.csv")
    lines = []  # a rank list added to a finished folder: only the rank images' features are new
    report = teach.teach(cfg.data, str(out), model=finetuned, extra_views=1, folds=2,
                         rank_list=rank_list, device="cpu", log=lines.append)
    assert any("resuming: 1 of 1 feature shards of photos done" in line for line in lines)
    assert any("features of rank images 33/33" in line for line in lines)
    rows = read_rows(out / "teacher.csv")
    assert rows[:len(photo_rows)] == photo_rows
    groups = lists.read_rank_list(rank_list)
    images = {p for g in groups for p in g.paths}
    rank_rows = [r for r in rows if r["path"] in images]
    assert len(images) == 3 * (1 + 2 * 5) == report["rank"]["images"]
    assert len(rank_rows) == 3 * len(images)  # the teacher's own 3 views, no random ones
    assert len(rows) == report["rows"] == len(train) * 4 + len(rank_rows)
    assert {r["scale"] for r in rank_rows} == {"0.0", "0.5", "1.0"}
    assert set(report["rank"]["families"]) == {"gblur", "wn"}
    assert 0 <= report["rank"]["pair_accuracy"] <= 1
    photo_fold = {r["path"]: r["fold"] for r in rows if r["path"] in train}
    sources = generate.reference_sources(rank_list)
    copies = {p for g in groups if sources[g.reference] == os.path.realpath(train[0])
              for p in g.paths}
    assert len(copies) == 11 and {r["fold"] for r in rank_rows if r["path"] in copies} == {
        photo_fold[train[0]]}

    # the reference photo's own label moved: its distorted copies' scores must not move (their
    # head never saw it), the other fold's images' do
    items = mos.read_dataset("csv", label_file)
    moved = tmp_path / "moved.csv"
    mos.write_generic_csv(str(moved), [
        dataclasses.replace(it, score=1.0 - it.score) if it.path == train[0] else it
        for it in items])
    teach.teach(finetune_config(str(moved)).data, str(out), model=finetuned, extra_views=1,
                folds=2, rank_list=rank_list, device="cpu", log=lambda line: None)
    again = {(r["path"], r["view"]): r for r in read_rows(out / "teacher.csv")}
    for r in rank_rows:
        after = again[(r["path"], r["view"])]
        if r["path"] in copies:
            assert after["score"] == r["score"]
    assert any(again[(r["path"], r["view"])]["score"] != r["score"] for r in rank_rows
               if r["fold"] != photo_fold[train[0]])


def test_rank_data_of_a_held_out_photo_is_refused(finetuned, label_file, tmp_path):
    from rankiqa.data import mos
    from rankiqa.train import teach

    cfg = finetune_config(label_file)
    parts = mos.load_splits(cfg.data)
    rank_list = rank_data_of([parts["train"][0].path, parts["val"][0].path], tmp_path / "rank")
    with pytest.raises(InputError, match="validation, test or excluded photo"):
        teach.teach(cfg.data, str(tmp_path / "t"), model=finetuned, extra_views=0, folds=2,
                    rank_list=rank_list, device="cpu", log=lambda line: None)
    assert not (tmp_path / "t").exists()  # refused before any feature was computed


def test_rank_references_are_found_again_from_an_older_manifest(photo_dir, tmp_path):
    import json

    from rankiqa.data import generate

    photos = [os.path.join(photo_dir, p) for p in sorted(os.listdir(photo_dir))[:2]]
    rank_list = rank_data_of(photos, tmp_path / "rank")
    sources = generate.reference_sources(rank_list)
    assert sorted(sources.values()) == sorted(os.path.realpath(p) for p in photos)
    manifest = tmp_path / "rank" / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["sources"]  # rank data made before manifests listed their sources
    manifest.write_text(json.dumps(data))
    assert generate.reference_sources(rank_list) == sources
    data["source"] = str(tmp_path / "gone.txt")
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match="source list cannot be read again"):
        generate.reference_sources(rank_list)
    manifest.unlink()
    with pytest.raises(InputError, match="no manifest.json"):
        generate.reference_sources(rank_list)


@pytest.mark.parametrize("frozen_batch_norm,rank_batch_norm", [("true", "batch"),
                                                               ("false", "moving")])
def test_the_students_three_signals_train_bit_identically_twice(
        finetuned, label_file, stage_one, rank_data, tmp_path, frozen_batch_norm,
        rank_batch_norm):
    """train.deterministic with all three signals (the MOS, the teacher's views, the rank
    groups), random scales and either batch-norm handling: the same command twice gives the
    same weights; another seed other ones."""
    from rankiqa.train import finetune

    teach_tiny(finetuned, label_file, tmp_path / "t")
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        finetune.train(finetune_config(label_file, stage_one, **{
            "signals.teacher_table": str(tmp_path / "t" / "teacher.csv"),
            "signals.teacher_views_per_batch": 4, "signals.rank_list": rank_data,
            "signals.rank_references_per_batch": 1, "data.random_scale": "true",
            "finetune.frozen_batch_norm": frozen_batch_norm,
            "signals.rank_batch_norm": rank_batch_norm, "train.seed": seed,
            "train.max_steps": 4}), str(tmp_path / name), device="cpu", log=lambda line: None)
        runs[name] = model_values(str(tmp_path / name))
    assert all(np.array_equal(runs["a"][n], runs["b"][n]) for n in runs["a"])
    assert not all(np.array_equal(runs["a"][n], runs["c"][n]) for n in runs["a"])
