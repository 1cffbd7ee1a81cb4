import json

import numpy as np
import pytest

from rankiqa.compat import slim, tf
from rankiqa.train import finetune, probe
from rankiqa_testkit import finetune_config, model_values


def linear_data(n=120, d=40, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    # spreads from 0.002 (below the head's batch-norm epsilon, as many pooled statistics) to 50
    x = rng.normal(size=(n, d)) * np.geomspace(0.002, 50, d) + rng.uniform(-5, 5, size=d)
    w = rng.normal(size=d) / x.std(0)
    return x, x @ w + noise * rng.normal(size=n)


def test_ridge_recovers_a_linear_signal_and_picks_alpha_by_cross_validation():
    x, y = linear_data()
    fit = probe.fit_ridge(x[:100], y[:100], alphas=[1e-3, 1e4], folds=5)
    assert fit["alpha"] == 1e-3 and fit["cv_srocc"][1e-3] > fit["cv_srocc"][1e4]
    predicted = ((x[100:] - fit["mean"]) / fit["std"]) @ fit["weights"] + fit["bias"]
    assert np.corrcoef(predicted, y[100:])[0, 1] > 0.99


@pytest.mark.parametrize("n,d", [(30, 80), (80, 30)])
def test_ridge_primal_and_dual_forms_agree_with_the_normal_equations(n, d):
    """Whichever side is smaller is decomposed; both equal (X'X + aI)^-1 X'y."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(n, d)), rng.normal(size=n)
    for alpha, w in zip([0.5, 50.0], probe._ridge(x, y, [0.5, 50.0])):
        expected = np.linalg.solve(x.T @ x + alpha * np.eye(d), x.T @ y)
        np.testing.assert_allclose(w, expected, rtol=1e-8, atol=1e-10)


def test_ridge_keeps_the_views_of_one_image_in_one_fold():
    x, _ = linear_data(n=100, d=400)
    # each image twice: were copies split across folds, cross-validation would reward
    # memorising (tiny alpha, more features than images) even on pure noise targets
    noise = np.random.default_rng(1).normal(size=100)
    xs, ys = np.vstack([x, x]), np.concatenate([noise, noise])
    groups = np.concatenate([np.arange(100)] * 2)
    fit = probe.fit_ridge(xs, ys, alphas=[1e-6, 1e6], folds=5, groups=groups)
    leaky = probe.fit_ridge(xs, ys, alphas=[1e-6, 1e6], folds=5)
    assert leaky["cv_srocc"][1e-6] > 0.6 > 0.25 > fit["cv_srocc"][1e-6]


def test_ridge_rejects_bad_input():
    x, y = linear_data(n=20)
    with pytest.raises(ValueError, match="do not pair up"):
        probe.fit_ridge(x, y[:-1], alphas=[1.0])
    with pytest.raises(ValueError, match="must be positive"):
        probe.fit_ridge(x, y, alphas=[0.0])
    with pytest.raises(ValueError, match="too few"):
        probe.fit_ridge(x[:8], y[:8], alphas=[1.0], folds=5)


@pytest.mark.parametrize("normalize", [True, False])
def test_head_values_make_the_head_compute_the_fit(normalize):
    x, y = linear_data(n=80, d=12)
    fit = probe.fit_ridge(x, y, alphas=[0.1, 10.0], folds=4)
    with tf.Graph().as_default(), tf.Session() as sess:
        features = tf.constant(x.reshape(80, 1, 1, 12), tf.float32)
        with tf.variable_scope("net/logits"):
            net = features
            if normalize:  # as vgg_16_pooled's head, in inference mode
                net = slim.batch_norm(net, center=True, scale=False, is_training=False,
                                      scope="feature_norm")
            net = slim.conv2d(net, 1, [1, 1], activation_fn=None,
                              scope=tf.get_variable_scope())
        head = {v.op.name.rsplit("/", 1)[-1]: v for v in slim.get_variables(scope="net/logits")}
        sess.run(tf.global_variables_initializer())
        for name, value in probe.head_values(fit, head).items():
            var = [v for v in head.values() if v.op.name == name][0]
            var.load(value, sess)
        got = sess.run(tf.reshape(net, [-1]))
    want = ((x - fit["mean"]) / fit["std"]) @ fit["weights"] + fit["bias"]
    # relative to the scores' spread, not their offset (the bias is in the thousands here)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * want.std())


def test_finetune_probe_fits_the_head_and_reports_the_frozen_result(stage_one, label_file,
                                                                    tmp_path):
    lines = []
    cfg = finetune_config(label_file, stage_one, **{
        "probe.enabled": True, "probe.folds": 2, "finetune.frozen_batch_norm": True,
        "train.max_steps": 0})
    finetune.train(cfg, str(tmp_path), device="cpu", log=lines.append)
    report = json.load(open(tmp_path / "probe.json"))
    assert report["alpha"] in cfg.probe.alphas and report["crops"] == 2
    assert report["features"] == 64  # resnet_v2_tiny's pooled width (4 x base depth 16)
    history = json.load(open(tmp_path / "eval.json"))["history"]
    assert [h["step"] for h in history] == [0]  # the probe's, once (one entry per step)
    # with no step taken and batch norm frozen, only the head differs from stage one
    before, after = model_values(stage_one), model_values(str(tmp_path))
    changed = sorted(n for n in after if not np.array_equal(before[n], after[n]))
    assert changed == ["resnet_v2/logits/biases", "resnet_v2/logits/weights"]
    assert any(line.startswith("probe: ridge alpha") for line in lines)
    # evaluated once, not again at the end (the same step: the same figures, twice the time)
    assert len([line for line in lines if line.startswith("validation srocc")]) == 1
    last = [line for line in lines if line.startswith("probe: features of ")][-1]
    assert last.startswith(f"probe: features of {report['images']}/{report['images']}, ")


def test_probe_with_too_few_images_for_its_folds_is_refused(stage_one, label_file,
                                                           tmp_path):
    cfg = finetune_config(label_file, stage_one, **{"probe.enabled": True,
                                                    "probe.folds": 1000,
                                                    "train.max_steps": 0})
    with pytest.raises(ValueError, match="too few for 1000-fold"):
        finetune.train(cfg, str(tmp_path), device="cpu", log=lambda line: None)


def ranking_data(n=200, d=20, groups=40, levels=4, seed=0):
    """Scores depend on feature 0 only; a distortion adds its level along feature 1, which the
    scores never see, so plain ridge orders the copies of a reference only by chance."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x[:, 0] + 0.1 * rng.normal(size=n)
    base = rng.normal(size=(groups, 1, d))
    step = np.zeros(d)
    step[1] = 0.5
    copies = 0.05 * rng.normal(size=(groups, levels, d))  # each copy its own content noise
    return x, y, base + np.arange(levels)[None, :, None] * step + copies


def test_ranked_probe_orders_the_groups_and_keeps_the_regression():
    x, y, groups = ranking_data()
    fit = probe.fit_ridge(x, y, alphas=[1.0], folds=5)
    ranked = probe.fit_ranked(x, y, groups, fit, weight=5.0, margin=0.3)
    r = ranked["rank"]
    assert r["pairs"] == 40 * 6 and r["iterations"] < 30
    assert r["pair_accuracy_before"] < 0.6 and r["pair_accuracy"] > 0.95
    predict = lambda f: ((x - f["mean"]) / f["std"]) @ f["weights"] + f["bias"]
    assert np.corrcoef(predict(fit), y)[0, 1] > np.corrcoef(predict(ranked), y)[0, 1] > 0.94
    # the standardisation and bias are ridge's, so head_values writes the head as before
    assert ranked["mean"] is fit["mean"] and ranked["bias"] == fit["bias"]
    # a tiny weight barely moves ridge's weights
    nudged = probe.fit_ranked(x, y, groups, fit, weight=1e-6, margin=0.05)
    np.testing.assert_allclose(nudged["weights"], fit["weights"], atol=1e-4)


def test_ranked_probe_is_the_minimum_of_its_objective():
    """At the solution the gradient of the squared-hinge objective vanishes."""
    x, y, groups = ranking_data(seed=1)
    fit = probe.fit_ridge(x, y, alphas=[3.0], folds=5)
    ranked = probe.fit_ranked(x, y, groups, fit, weight=2.0, margin=0.3)
    z, w = (x - fit["mean"]) / fit["std"], ranked["weights"]
    d = probe.ranking_pairs(groups / fit["std"])
    c = 2.0 * len(z) / len(d)
    hinge = np.maximum(0.0, 0.3 - d @ w)
    gradient = 2 * z.T @ (z @ w - (y - fit["bias"])) - 2 * c * d.T @ hinge + 2 * 3.0 * w
    assert np.abs(gradient).max() < 1e-6 * np.abs(2 * z.T @ y).max()
    assert 0 < ranked["rank"]["active_pairs"] < len(d)  # the margin binds on some pairs


def test_ranked_probe_rejects_bad_input():
    x, y, groups = ranking_data()
    fit = probe.fit_ridge(x, y, alphas=[1.0], folds=5)
    with pytest.raises(ValueError, match="positive weight"):
        probe.fit_ranked(x, y, groups, fit, weight=0.0, margin=0.05)
    with pytest.raises(ValueError, match="at least two levels"):
        probe.fit_ranked(x, y, groups[:, :1], fit, weight=1.0, margin=0.05)


def test_finetune_ranked_probe_orders_rank_groups(stage_one, label_file, rank_data, tmp_path):
    lines = []
    cfg = finetune_config(label_file, stage_one, **{
        "probe.enabled": True, "probe.folds": 2, "finetune.frozen_batch_norm": True,
        "train.max_steps": 0, "signals.rank_list": rank_data,
        "probe.rank_weight": 1.0, "probe.rank_groups": 5})
    finetune.train(cfg, str(tmp_path), device="cpu", log=lines.append)
    rank = json.load(open(tmp_path / "probe.json"))["rank"]
    assert rank["pairs"] == 5 * 15 and rank["weight"] == 1.0  # 5 groups of 6 levels
    assert rank["pair_accuracy"] > rank["pair_accuracy_before"]
    assert any(line.startswith("probe: ranking weight 1 on 75 level pairs of 5 groups")
               for line in lines)


def test_the_ranking_weight_follows_the_number_of_labels(stage_one, label_file, rank_data,
                                                         tmp_path):
    """probe.rank_rule: labels: the weight the label-efficiency study measured as best
    for N labelled photos; without a rank list the probe stays plain ridge."""
    assert [round(probe.weight_for_labels(n), 3) for n in (1, 25, 100, 400, 10000)] == [
        30.0, 24.0, 3.0, 0.375, 0.1]
    with pytest.raises(ValueError, match="at least one labelled photo"):
        probe.weight_for_labels(0)
    common = {"probe.enabled": True, "probe.folds": 2, "train.max_steps": 0,
              "finetune.frozen_batch_norm": True, "probe.rank_rule": "labels"}
    lines = []
    finetune.train(finetune_config(label_file, stage_one, **common, **{
        "signals.rank_list": rank_data, "probe.rank_groups": 5}),
        str(tmp_path / "ranked"), device="cpu", log=lines.append)
    train = int(next(line for line in lines if " training, " in line).split(": ")[1].split()[0])
    weight = probe.weight_for_labels(train)
    assert json.load(open(tmp_path / "ranked" / "probe.json"))["rank"]["weight"] == weight
    assert f"probe: ranking weight {weight:.3g} for {train} labelled training photos" in (
        "\n".join(lines))
    lines = []
    finetune.train(finetune_config(label_file, stage_one, **common), str(tmp_path / "plain"),
                   device="cpu", log=lines.append)
    assert "rank" not in json.load(open(tmp_path / "plain" / "probe.json"))
    assert not any("ranking weight" in line for line in lines)
    with pytest.raises(ValueError, match="unknown probe.rank_rule 'size'"):
        finetune.train(finetune_config(label_file, stage_one, **{
            **common, "probe.rank_rule": "size"}), str(tmp_path / "bad"),
            device="cpu", log=lambda line: None)


def test_ranked_probe_needs_the_probe_and_a_rank_list(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, stage_one, **{"probe.enabled": True,
                                                    "probe.rank_weight": 1.0})
    with pytest.raises(ValueError, match="probe.rank_weight needs probe.enabled and a "
                                         "signals.rank_list"):
        finetune.train(cfg, str(tmp_path), device="cpu", log=lambda line: None)
