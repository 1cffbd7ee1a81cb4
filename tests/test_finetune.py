import json

import numpy as np
import pytest

from rankiqa import config as config_lib
from rankiqa.checkpoints import CheckpointError
from rankiqa.compat import tf
from rankiqa.data import lists, mos
from rankiqa.train import finetune, rank
from tests.conftest import tiny_rank_overrides


@pytest.fixture(scope="module")
def stage_one(rank_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage_one")
    cfg = config_lib.load(config_lib.RankConfig, None,
                          tiny_rank_overrides(rank_data, **{"train.max_steps": 2}))
    rank.train(cfg, str(out), device="cpu", log=lambda line: None)
    return str(out)


@pytest.fixture(scope="module")
def label_file(rank_data, tmp_path_factory):
    """A generic CSV over the rank data, score falling with the level (references kept)."""
    items = [mos.ScoredImage(p, 1.0 - k / 5, 1.0 - k / 5, g.reference, g.distortion)
             for g in lists.read_rank_list(rank_data) for k, p in enumerate(g.paths)]
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    mos.write_generic_csv(str(path), items)
    return str(path)


def finetune_config(label_file, **extra):
    values = {"net.name": "resnet_v2_tiny", "data.label_file": label_file,
              "data.crop_size": 32, "data.batch_size": 4, "data.eval_crops": 2,
              "optim.optimizer": "adam", "optim.lr": 1e-2, "train.max_steps": 3,
              "train.log_every": 1, "train.save_every": 3, "train.eval_every": 0}
    values.update(extra)
    return config_lib.load(config_lib.FinetuneConfig, None, [f"{k}={v}" for k, v in values.items()])


def model_values(ckpt_dir):
    reader = tf.train.load_checkpoint(ckpt_dir)
    return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(ckpt_dir)
            if n.startswith("resnet_v2/") and "Adam" not in n}


def test_restores_everything_but_the_head(stage_one, label_file, tmp_path):
    lines = []
    result = finetune.train(finetune_config(label_file), stage_one, str(tmp_path), device="cpu",
                            log=lines.append)
    report = result["restore_report"]
    stage_one_names = set(model_values(stage_one))
    assert {m for m, _ in report.restored} == {n for n in stage_one_names
                                                if not n.startswith("resnet_v2/logits/")}
    assert sorted(report.excluded) == ["resnet_v2/logits/biases", "resnet_v2/logits/weights"]
    assert not report.missing and not report.shape_mismatch
    saved = json.load(open(tmp_path / "restore_report.json"))
    assert len(saved["restored"]) == len(stage_one_names) - 2
    assert any(line.startswith(f"restored {len(stage_one_names) - 2} variables") for line in lines)
    evaluation = json.load(open(tmp_path / "eval.json"))
    assert {"srocc", "plcc", "krocc", "rmse"} <= set(evaluation)


def test_trainable_scopes_leave_frozen_variables_bit_identical(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, **{"finetune.trainable_scopes": "[resnet_v2/logits]"})
    finetune.train(cfg, stage_one, str(tmp_path), device="cpu", log=lambda line: None)
    before, after = model_values(stage_one), model_values(str(tmp_path))
    changed = [n for n in before if not np.array_equal(before[n], after[n])]
    assert changed and all(n.startswith("resnet_v2/logits/") for n in changed)
    assert "resnet_v2/logits/weights" in after


def test_l1_loss_and_resume(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, **{"train.loss": "l1"})
    finetune.train(cfg, stage_one, str(tmp_path), device="cpu", log=lambda line: None)
    lines = []
    cfg = finetune_config(label_file, **{"train.loss": "l1", "train.max_steps": 5})
    result = finetune.train(cfg, stage_one, str(tmp_path), device="cpu", log=lines.append)
    assert result["step"] == 5 and any("at step 3" in line for line in lines)


def test_checkpoint_matching_nothing_is_refused(label_file, tmp_path):
    other = tmp_path / "other"
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.Variable(1.0, name="unrelated/v")
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, str(other / "model.ckpt"))
    with pytest.raises(CheckpointError, match="matches no model variable"):
        finetune.train(finetune_config(label_file), str(other), str(tmp_path / "run"),
                       device="cpu", log=lambda line: None)
    with pytest.raises(CheckpointError, match="does not exist"):
        finetune.train(finetune_config(label_file), str(tmp_path / "nope"), str(tmp_path / "r"),
                       device="cpu", log=lambda line: None)


def test_from_scratch_trains_from_random_weights_and_refuses_a_start(stage_one, label_file,
                                                                     tmp_path):
    lines = []
    result = finetune.train(finetune_config(label_file), None, str(tmp_path / "scratch"),
                            device="cpu", log=lines.append, from_scratch=True)
    assert result["step"] == 3 and not any(line.startswith("restored") for line in lines)
    with pytest.raises(ValueError, match="--from-scratch starts from random weights"):
        finetune.train(finetune_config(label_file), stage_one, str(tmp_path / "both"),
                       device="cpu", log=lambda line: None, from_scratch=True)


def test_unknown_eval_crop_mode_is_refused_before_training(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, **{"data.eval_crop_mode": "spiral"})
    with pytest.raises(ValueError, match="data.eval_crop_mode 'spiral' is not one of"):
        finetune.train(cfg, stage_one, str(tmp_path), device="cpu", log=lambda line: None)
    assert not (tmp_path / "checkpoint").exists()
