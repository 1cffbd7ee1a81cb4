"""Few labels on a shipped model (`rankiqa.train.adapt`, `rankiqa calibrate`): the arms, the
cross-validated choice, the head they fold into, and the adapted model on disk."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import rankiqa
from rankiqa import cli
from rankiqa.cli import main
from rankiqa.data import mos
from rankiqa.errors import InputError
from rankiqa.train import adapt


def brute_force_loo(z, r, alpha, fixed=None):
    """Leave-one-out squared error of ridge with unpenalised columns (an intercept, `fixed`),
    by refitting without each photo in turn."""
    n = len(r)
    s = np.ones((n, 1)) if fixed is None else np.column_stack([np.ones(n), fixed])
    errors = []
    for i in range(n):
        keep = np.arange(n) != i
        a = np.column_stack([s[keep], z[keep]])
        penalty = np.diag([0.0] * s.shape[1] + [alpha] * z.shape[1])
        coef = np.linalg.solve(a.T @ a + penalty, a.T @ r[keep])
        errors.append((r[i] - np.concatenate([s[i], z[i]]) @ coef) ** 2)
    return float(np.mean(errors))


@pytest.mark.parametrize("with_score", [False, True])
def test_ridge_picks_the_alpha_that_refitting_without_each_photo_would_pick(rng, with_score):
    z, s = rng.normal(size=(30, 8)), rng.uniform(size=30)
    r = z @ rng.normal(size=8) * 0.3 + 2 * s + rng.normal(size=30)
    fixed = s[:, None] if with_score else None
    alphas = [0.01, 1.0, 30.0, 1000.0]
    w, alpha, beta = adapt.ridge_loo(z, r, alphas, fixed)
    assert alpha == min(alphas, key=lambda a: brute_force_loo(z, r, a, fixed))
    cols = np.ones((30, 1)) if fixed is None else np.column_stack([np.ones(30), s])
    a = np.column_stack([cols, z])
    coef = np.linalg.solve(a.T @ a + np.diag([0.0] * cols.shape[1] + [alpha] * 8), a.T @ r)
    np.testing.assert_allclose(np.concatenate([beta, w]), coef, atol=1e-8)


def test_each_arm_fits_what_it_promises(rng):
    x, s = rng.normal(size=(40, 6)), rng.uniform(size=40)
    calibrate = adapt.fit_arm("calibrate", x, s, 0.5 * s + 0.2)
    assert (calibrate.a, calibrate.c) == pytest.approx((0.5, 0.2))
    assert not calibrate.w.any()  # the model's order of photos, untouched
    # what the model misses lies in one feature: the centred head finds it, calibration cannot
    y = 0.5 * s + 0.2 + 0.3 * x[:, 2]
    centred = adapt.fit_arm("centred", x, s, y)
    assert np.abs(centred.predict(x, s) - y).max() < 0.05 < np.abs(calibrate.predict(x, s) - y).max()
    fresh = adapt.fit_arm("fresh", x, s, y)
    assert fresh.a == 0  # the source's score plays no part
    np.testing.assert_allclose(fresh.predict(x, s), fresh.predict(x, s * 0 + 7))
    with pytest.raises(InputError, match="9 labelled photos are too few for the centred head"):
        adapt.fit_arm("centred", x[:9], s[:9], y[:9])


def test_the_choice_keeps_the_model_when_labels_follow_it_and_leaves_it_when_not(rng):
    x, s = rng.normal(size=(60, 20)), rng.uniform(size=60)
    follows = 2.0 * s + rng.normal(size=60) * 0.05  # the model ranks well: keep its order
    fit, report = adapt.choose(x, s, follows)
    assert report["head"] == "calibrate" and report["chosen_by"] == "cross-validation"
    assert set(report["cv"]) == set(adapt.ARMS)
    assert report["cv"]["calibrate"]["srocc"] > report["cv"]["fresh"]["srocc"] + 0.1
    own = x[:, 0] + x[:, 1]  # the labels' order lies in the features, not in the model's score
    fit, report = adapt.choose(x, s, own)
    assert report["head"] == "centred"  # fresh is reported, never chosen: centred holds it
    assert report["cv"]["centred"]["srocc"] > report["cv"]["calibrate"]["srocc"] + 0.3
    assert report["cv"]["fresh"]["srocc"] > report["cv"]["calibrate"]["srocc"] + 0.3
    assert abs(fit.a) < 0.2  # the labels ignore the model's score, and so does the fit
    assert any("refitted on all 60 labels" in line for line in adapt.describe(report))
    with pytest.raises(InputError, match="14 labelled photos are too few to choose a head by "
                                         "5-fold cross-validation .it needs 15.; --head "
                                         "calibrate needs 3"):
        adapt.choose(x[:14], s[:14], own[:14])
    fit, report = adapt.choose(x[:5], s[:5], follows[:5], head="calibrate")
    assert "cv" not in report and report["chosen_by"] == "--head"


@pytest.mark.parametrize("normalising", [False, True])
def test_every_arm_folds_into_the_networks_head(rng, normalising):
    d = 5
    values = {"weights": rng.normal(size=(1, 1, d, 1)), "biases": np.array([0.3])}
    x = rng.normal(size=(30, d)) * 3 + 1
    if normalising:  # a batch-norm head (vgg_16_pooled): bn(x) then the linear layer
        values.update(moving_mean=rng.normal(size=d), moving_variance=rng.uniform(1, 4, d),
                      beta=rng.normal(size=d))

    def head(v, x):
        if "moving_mean" in v:
            x = (x - v["moving_mean"]) / np.sqrt(v["moving_variance"] + 1e-3) + v["beta"]
        return x @ v["weights"].reshape(-1) + v["biases"][0]

    kernel, bias = adapt.linear_head(values, 1e-3)
    s = adapt.source_scores(x, kernel, bias)
    np.testing.assert_allclose(s, head(values, x), atol=1e-10)
    y = 0.5 * s + x[:, 0]
    for arm in adapt.ARMS:
        fit = adapt.fit_arm(arm, x, s, y)
        folded = adapt.folded_head(fit, kernel, bias, set(values), 1e-3)
        np.testing.assert_allclose(head(folded, x), fit.predict(x, s), atol=1e-9)


def test_the_cli_spells_the_arms_as_the_module_does():
    assert cli.ADAPT_ARMS == adapt.ARMS


@pytest.fixture(scope="module")
def labels_1_to_5(label_file, tmp_path_factory):
    """`label_file`'s photos on a 1-5 scale, in `file,rating` columns, paths relative to it."""
    items = mos.read_dataset("csv", label_file)
    path = tmp_path_factory.mktemp("own") / "labels.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("file,rating\n" + "".join(f"{it.path},{1 + 4 * it.score:.4f}\n" for it in items))
    return str(path), items


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_calibrate_puts_a_model_on_the_users_scale_without_changing_its_order(
        finetuned, labels_1_to_5, tmp_path):
    path, items = labels_1_to_5
    out = tmp_path / "mine"
    result = invoke("calibrate", finetuned, "--labels", path, "--output-dir", out, "--device",
                    "cpu", "--set", "data.score_range=[1, 5]")
    assert result.exit_code == 0, result.output
    assert "head: calibrate (as asked)" in result.output
    assert "cross-validated srocc" in result.output
    info = json.load(open(out / "rankiqa.json"))
    assert info["stage"] == "adapt" and info["adapt"]["head"] == "calibrate"
    a, c = info["adapt"]["fit"]["a"], info["adapt"]["fit"]["c"]
    photos = [it.path for it in items[:12]]
    with rankiqa.load_model(finetuned, device="cpu", engine="tensorflow",
                           normalised=True) as source, \
            rankiqa.load_model(str(out), device="cpu", engine="tensorflow") as mine:
        assert mine.score_range == (1.0, 5.0) and not mine.lower_better
        np.testing.assert_allclose(mine.score(photos), 1 + 4 * (a * source.score(photos) + c),
                                   rtol=1e-4, atol=1e-4)
    # evaluate and the exports take it as any run
    result = invoke("evaluate", "--model", out, "--set", f"data.label_file={path}", "--set",
                    "data.score_range=[1, 5]", "--split", "all", "--output-dir",
                    tmp_path / "eval", "--device", "cpu")
    assert result.exit_code == 0, result.output
    # the output is never replaced without --force, and never an input
    result = invoke("calibrate", finetuned, "--labels", path, "--output-dir", out, "--set",
                    "data.score_range=[1, 5]")
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
    result = invoke("calibrate", finetuned, "--labels", path, "--output-dir", finetuned,
                    "--force", "--set", "data.score_range=[1, 5]")
    assert result.exit_code == 1 and "is, holds or lies inside the input" in result.output


def test_an_adapted_head_scores_in_the_network_as_it_was_fitted(finetuned, labels_1_to_5,
                                                                 tmp_path):
    from rankiqa.serve.scoring import load_scorer

    path, items = labels_1_to_5
    data = mos.read_dataset("csv", path, score_range=(1, 5))
    lines = []
    report = adapt.adapt(finetuned, data, _data_config(path), str(tmp_path / "mine"), path,
                         head="centred", device="cpu", log=lines.append)
    assert report["head"] == "centred" and report["chosen_by"] == "--head"
    with load_scorer(finetuned, device="cpu", normalised=True) as source:
        x = source.values([it.path for it in data], tensor="features")
        x = x.reshape(len(data), -1, x.shape[-1]).mean(1)
        s = source.score_items([it.path for it in data])
    fit, _ = adapt.choose(x, s, [it.score for it in data], "centred")
    with load_scorer(str(tmp_path / "mine"), device="cpu", normalised=True) as mine:
        np.testing.assert_allclose(mine.score_items([it.path for it in data]),
                                   fit.predict(x, s), atol=2e-4)
    assert fit.alpha is not None and np.abs(fit.w).max() > 0


def _data_config(path):
    from rankiqa import config as config_lib

    return config_lib.load(config_lib.FinetuneConfig, None, [
        f"data.label_file={path}", "data.score_range=[1, 5]"]).data


def test_calibrate_refuses_labels_off_their_scale_before_loading_anything(labels_1_to_5,
                                                                           tmp_path):
    path, _ = labels_1_to_5
    result = invoke("calibrate", "biq2021-efficientnet-lite2-ranked", "--labels", path,
                    "--output-dir", tmp_path / "out")
    assert result.exit_code == 1
    assert "outside the range 0-1" in result.output and "data.score_range" in result.output
    assert not os.path.exists(tmp_path / "out")
    result = invoke("calibrate", "no-such-model", "--labels", path, "--output-dir",
                    tmp_path / "out", "--set", "data.score_range=[1, 5]")
    assert result.exit_code == 1 and "no-such-model" in result.output


def test_finetune_below_adapt_below_adapts_a_model_and_trains_nothing(finetuned, label_file,
                                                                       tmp_path):
    from rankiqa.train import finetune
    from rankiqa_testkit import finetune_config

    lines, run = [], tmp_path / "mine"
    config = finetune_config(label_file, "scratch", **{"adapt.below": 1000,
                                                       "adapt.model": finetuned})
    result = finetune.train(config, str(run), device="cpu", log=lines.append)
    n = len(mos.read_dataset("csv", label_file))
    assert result["adapt"]["labels"] == n and result["eval"] is None
    assert any(f"{n} labelled photos, fewer than adapt.below=1000: {finetuned} adapted" in line
               for line in lines)
    assert result["adapt"]["head"] in adapt.ARMS and "cv" in result["adapt"]
    assert not [f for f in os.listdir(run) if f.startswith("model.ckpt-")]  # no step trained
    info = json.load(open(run / "rankiqa.json"))
    assert info["stage"] == "adapt" and info["source"] == finetuned
    # the same command again: found done; other settings: refused, the model kept
    lines.clear()
    finetune.train(config, str(run), device="cpu", log=lines.append)
    assert lines == [f"{run} already holds {finetuned} adapted to these labels with these "
                     "settings; nothing to do"]
    other = finetune_config(label_file, "scratch", **{"adapt.below": 1000,
                                                      "adapt.model": finetuned,
                                                      "adapt.head": "calibrate"})
    with pytest.raises(InputError, match="already holds a run .adapt, or other settings"):
        finetune.train(other, str(run), device="cpu", log=lines.append)
    assert json.load(open(run / "rankiqa.json")) == info
    # evaluate on its own file would score photos it was fitted on: refused, with the way out
    result = invoke("evaluate", "--model", run, "--output-dir", tmp_path / "e")
    assert result.exit_code == 1 and "has no validation part" in result.output
    assert "cross-validated figures are in its rankiqa.json" in result.output
