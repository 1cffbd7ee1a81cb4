"""Stage two, `rankiqa finetune`: transfer the ranking network to real quality scores.

Reads top to bottom: data (label file -> seeded split -> tf.data), network (the same backbone,
a fresh head), restore (the stage-one checkpoint minus `checkpoint_exclude_scopes`), loss
(L2/L1 on scores normalised to [0, 1], higher better), loop (shared with stage one).
"""

import os

import numpy as np

from rankiqa import checkpoints, inference, losses, metrics, nets
from rankiqa.compat import slim, tf
from rankiqa.config import to_dict
from rankiqa.data import mos, pipeline
from rankiqa.train import loop, probe

EVAL_NAME = "eval.json"
RESTORE_REPORT_NAME = "restore_report.json"
PROBE_REPORT_NAME = "probe.json"


def build_inference_branch(network_fn, crop_size):
    """(uint8 crops placeholder, scores, pooled features or None): the network in inference
    mode, sharing the training graph's variables, for validation and for the probe."""
    images = tf.placeholder(tf.uint8, [None, crop_size, crop_size, 3])
    score, end_points = network_fn(network_fn.preprocess(images), is_training=False, reuse=True)
    features = end_points.get("features")
    if features is not None:
        features = tf.reshape(features, [tf.shape(images)[0], -1])
    return images, score, features


def _run_batched(sess, tensor, images, stack, batch=32):
    return np.concatenate([sess.run(tensor, {images: stack[i:i + batch]})
                           for i in range(0, len(stack), batch)])


def _crop_stack(items, data_cfg, crops):
    """``[len(items), crops, crop, crop, 3]``: the crops evaluation scores
    (`data_cfg.eval_crop_mode`)."""
    return np.stack([inference.image_crops(inference.load_image(it.path), data_cfg.crop_size,
                                           crops, data_cfg.eval_crop_mode, seed=k)
                     for k, it in enumerate(items)])


def build_mos_evaluator(branch, items, data_cfg, log):
    """``eval_fn(session, step)``: SROCC/PLCC/... on `items`, multi-crop, inference mode."""
    if not items:
        return None
    images, score, _ = branch
    crops = data_cfg.eval_crops
    # decoded and cropped once: the validation set is scored at every evaluation
    stacks = _crop_stack(items, data_cfg, crops)
    targets = np.array([it.score for it in items])
    history = []

    def eval_fn(sess, step):
        flat = stacks.reshape(-1, *stacks.shape[2:])
        predicted = _run_batched(sess, score, images, flat, batch=64)
        predicted = predicted.reshape(len(items), crops).mean(axis=1)
        result = metrics.summary(predicted, targets)
        history.append({"step": step, "srocc": result["srocc"], "plcc": result["plcc"]})
        result.update(step=step, history=list(history), crops=crops)
        log(f"validation srocc {result['srocc']:.4f} plcc {result['plcc']:.4f} "
            f"({len(items)} images) at step {step}")
        return result

    return eval_fn


def build_probe_init(branch, items, head_scope, transfer, data_cfg, seed, log, report_path):
    """``init_fn(session)``: the head fitted by ridge on the frozen network's pooled features of
    `probe_crops` crops per training image, placed as evaluation places them
    (rankiqa.train.probe). Runs after every restore, so the features are those of the start
    fine-tuning begins from."""
    images, _, features = branch
    if features is None:
        raise ValueError(f"finetune.probe needs a network that exposes its pooled features; "
                         f"{head_scope} does not")
    head = {v.op.name.rsplit("/", 1)[-1]: v for v in slim.get_model_variables(scope=head_scope)}
    if not {"weights", "biases"} <= set(head):
        raise ValueError(f"finetune.probe needs a linear head under {head_scope}; found "
                         f"{sorted(v.op.name for v in head.values())}")

    def init_fn(sess):
        crops = transfer.probe_crops
        log(f"probe: pooled features of {len(items)} training images x {crops} crops")
        stack = _crop_stack(items, data_cfg, crops)
        x = _run_batched(sess, features, images, stack.reshape(-1, *stack.shape[2:]))
        y = np.repeat([it.score for it in items], crops)
        fit = probe.fit_ridge(x, y, transfer.probe_alphas, transfer.probe_folds, seed=seed,
                              groups=np.repeat(np.arange(len(items)), crops))
        by_name = {v.op.name: v for v in head.values()}
        for name, value in probe.head_values(fit, head).items():
            by_name[name].load(value, sess)
        cv = ", ".join(f"{a:g}: {s:.4f}" for a, s in fit["cv_srocc"].items())
        log(f"probe: ridge alpha {fit['alpha']:g} on {x.shape[1]} features "
            f"(cross-validated srocc by alpha {cv})")
        loop.write_json_atomic(report_path, {
            "alpha": fit["alpha"], "cv_srocc": fit["cv_srocc"], "features": int(x.shape[1]),
            "images": len(items), "crops": crops})

    return init_fn


def train(config, init_checkpoint, train_dir, device="auto", log=print, from_scratch=False):
    """Fine-tunes as configured; resumes from `train_dir` when it holds a checkpoint.

    Args:
      config: `rankiqa.config.FinetuneConfig`.
      init_checkpoint: the stage-one training directory or checkpoint prefix.
      from_scratch: start from random weights instead (the no-pretraining baseline).
      train_dir: output directory.

    Returns:
      dict from `loop.run_loop` plus ``eval_path`` and ``restore_report``.
    """
    data_cfg, train_cfg, transfer = config.data, config.train, config.finetune
    if from_scratch and (init_checkpoint or config.net.init_from):
        raise ValueError("--from-scratch starts from random weights: drop --init-checkpoint "
                         "and net.init_from")
    if not init_checkpoint and not config.net.init_from and not from_scratch:
        raise ValueError("finetune needs --init-checkpoint (the stage-one output directory), "
                         "net.init_from for a start without stage one, or --from-scratch")
    if init_checkpoint:
        init_checkpoint = checkpoints.resolve_checkpoint(init_checkpoint)
    if data_cfg.eval_crop_mode not in inference.CROP_MODES:  # before minutes of training
        raise ValueError(f"data.eval_crop_mode {data_cfg.eval_crop_mode!r} is not one of "
                         f"{list(inference.CROP_MODES)}")
    if not data_cfg.label_file:
        raise ValueError("finetune needs data.label_file (the dataset's label file)")
    network_fn = nets.get_network_fn(config.net.name, weight_decay=config.net.weight_decay,
                                     batch_norm_decay=config.net.batch_norm_decay)
    loss_fn = losses.get_regression_loss_fn(train_cfg.loss)
    device_name = loop.get_device(device)
    os.makedirs(train_dir, exist_ok=True)
    eval_path = os.path.join(train_dir, EVAL_NAME)

    tf.reset_default_graph()
    loop.set_determinism(train_cfg)

    # ---- data: a seeded split, by reference where the dataset has references
    items = mos.read_dataset(data_cfg.dataset, data_cfg.label_file, data_cfg.image_root)
    parts = mos.split(items, data_cfg.val_fraction, data_cfg.test_fraction,
                      data_cfg.split_seed, data_cfg.split_index)
    train_items = parts["train"]
    if len(train_items) < data_cfg.batch_size:
        raise ValueError(f"{len(train_items)} training images cannot fill data.batch_size="
                         f"{data_cfg.batch_size}")
    log(f"{data_cfg.dataset}: {len(train_items)} training, {len(parts['val'])} validation, "
        f"{len(parts['test'])} test images")
    dataset = pipeline.mos_dataset([it.path for it in train_items],
                                   [it.score for it in train_items], data_cfg.crop_size,
                                   data_cfg.batch_size, seed=train_cfg.seed,
                                   cache=data_cfg.cache_decoded,
                                   deterministic=train_cfg.deterministic,
                                   random_scale=data_cfg.random_scale)
    images, targets = tf.data.make_one_shot_iterator(dataset).get_next()

    with tf.device(device_name):
        # ---- network: the stage-one backbone and a fresh one-score head
        global_step = tf.train.get_or_create_global_step()
        scores, _ = network_fn(network_fn.preprocess(images),
                               is_training=not transfer.frozen_batch_norm)

        # ---- restore: everything but the excluded scopes (default: the head), over the
        # optional pretrained start
        pretrained_init = loop.pretrained_init_fn(config.net, log)
        checkpoint_init, report = None, None
        if init_checkpoint:
            exclude = transfer.checkpoint_exclude_scopes or (network_fn.head_scope,)
            assignment, report = checkpoints.build_restore_map(
                init_checkpoint, slim.get_model_variables(), exclude_scopes=exclude,
                ignore_missing_vars=transfer.ignore_missing_vars)
            for line in report.lines():
                log(line)
            checkpoint_init = checkpoints.build_init_fn(assignment, init_checkpoint)

        # ---- loss: regression on normalised scores, plus weight decay
        regression_loss = loss_fn(scores, targets)
        total_loss = tf.add(regression_loss, tf.losses.get_regularization_loss(),
                            name="total_loss")
        variables_to_train, update_ops = loop.select_trainable(transfer.trainable_scopes,
                                                               "finetune.trainable_scopes")
        multipliers = {v: transfer.head_lr_multiplier for v in tf.trainable_variables()
                       if checkpoints.in_scopes(v.op.name, [network_fn.head_scope])
                       and (variables_to_train is None or v in variables_to_train)}
        train_op, learning_rate = loop.build_train_op(
            total_loss, config.optim, global_step, variables_to_train=variables_to_train,
            gradient_multipliers=multipliers or None, update_ops=update_ops)
        branch = build_inference_branch(network_fn, data_cfg.crop_size)
        eval_fn = build_mos_evaluator(branch, parts["val"], data_cfg, log)
        probe_init = None
        if transfer.probe:
            probe_init = build_probe_init(branch, train_items, network_fn.head_scope, transfer,
                                          data_cfg, train_cfg.seed, log,
                                          os.path.join(train_dir, PROBE_REPORT_NAME))

    def write_eval(sess, step):
        result = eval_fn(sess, step)
        loop.write_json_atomic(eval_path, result)
        return result

    if report is not None:
        loop.write_json_atomic(os.path.join(train_dir, RESTORE_REPORT_NAME), report.as_dict())
    loop.write_json_atomic(os.path.join(train_dir, loop.RUN_INFO_NAME), {
        "stage": "finetune", "net": config.net.name, "crop_size": data_cfg.crop_size,
        "init_checkpoint": init_checkpoint, "config": to_dict(config),
        "score": "normalised to [0, 1], higher is better"})

    # ---- loop
    result = loop.run_loop(
        train_dir, train_op, train_cfg.max_steps, train_cfg,
        scalars={"loss": regression_loss, "total_loss": total_loss,
                 "learning_rate": learning_rate},
        # the probe fits the head last, on the features of the restored backbone; the
        # evaluation after it is the frozen-backbone result (step 0 of the history)
        init_fn=loop.chain_init_fns(pretrained_init, checkpoint_init, probe_init,
                                    (lambda sess: write_eval(sess, 0)) if probe_init and eval_fn
                                    else None),
        eval_fn=write_eval if eval_fn else None, log=log, images_per_step=data_cfg.batch_size)
    result["eval_path"] = eval_path if eval_fn else None
    result["restore_report"] = report
    return result
