"""Helpers the tests share (the fixtures live in conftest.py). Imported as `rankiqa_testkit`:
the pytest settings put tests/ on the path, so collection works however pytest is started
(tf2onnx installs a top-level `tests` package that would shadow `tests.conftest`)."""


def tiny_rank_overrides(rank_list, train_dir=None, **extra):
    """--set overrides for a seconds-long stage-one run on `rank_data`."""
    values = {
        "net.name": "resnet_v2_tiny", "data.rank_list": rank_list, "data.crop_size": 32,
        "data.references_per_batch": 2, "data.holdout_references": 2, "data.eval_crops": 2,
        "data.eval_crop_size": 48, "optim.optimizer": "adam", "optim.lr": 1e-3,
        "train.margin": 1.0, "train.max_steps": 6, "train.log_every": 2,
        "train.summary_every": 2, "train.save_every": 3, "train.eval_every": 3,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def train_tiny_rank(rank_list, train_dir, **extra):
    """A tiny stage-one run (`tiny_rank_overrides`); returns (result, logged lines)."""
    from rankiqa import config as config_lib
    from rankiqa.train import rank

    cfg = config_lib.load(config_lib.RankConfig, None, tiny_rank_overrides(rank_list, **extra))
    lines = []
    result = rank.train(cfg, str(train_dir), device="cpu", log=lines.append)
    return result, lines


def finetune_config(label_file, init="scratch", **extra):
    """A seconds-long tiny stage-two config on `label_file`, starting from `init`."""
    from rankiqa import config as config_lib

    values = {"net.name": "resnet_v2_tiny", "init.source": init, "data.label_file": label_file,
              "data.crop_size": 32, "data.batch_size": 4, "data.eval_crops": 2,
              "optim.optimizer": "adam", "optim.lr": 1e-2, "train.max_steps": 3,
              "train.log_every": 1, "train.save_every": 3, "train.eval_every": 0,
              # the tiny runs validate on about 25 photos; their keep_best tests need it to choose
              "train.keep_best_from": 2}
    values.update(extra)
    return config_lib.load(config_lib.FinetuneConfig, None, [f"{k}={v}" for k, v in values.items()])


def model_values(ckpt_dir, scope="resnet_v2/"):
    """``{name: array}`` of a checkpoint's model variables under `scope`."""
    from rankiqa.compat import tf
    from rankiqa.weights.restore import is_model_variable

    reader = tf.train.load_checkpoint(ckpt_dir)
    return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(ckpt_dir)
            if n.startswith(scope) and is_model_variable(n)}


def import_script(name):
    """The module of ``scripts/NAME.py`` (``dev/make_docs``; scripts are not a package)."""
    import importlib
    import os
    import sys

    folder, name = os.path.split(name)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "scripts", folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
