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
from rankiqa.train import loop

EVAL_NAME = "eval.json"
RESTORE_REPORT_NAME = "restore_report.json"


def build_mos_evaluator(network_fn, items, data_cfg, log):
    """``eval_fn(session, step)``: SROCC/PLCC/... on `items`, multi-crop, inference mode."""
    if not items:
        return None
    crops = data_cfg.eval_crops
    # decoded and cropped once: the validation set is scored at every evaluation
    stacks = np.stack([inference.image_crops(inference.load_image(it.path), data_cfg.crop_size,
                                             crops, data_cfg.eval_crop_mode, seed=k)
                       for k, it in enumerate(items)])
    images = tf.placeholder(tf.uint8, [None, data_cfg.crop_size, data_cfg.crop_size, 3])
    score, _ = network_fn(network_fn.preprocess(images), is_training=False, reuse=True)
    targets = np.array([it.score for it in items])
    history = []

    def eval_fn(sess, step):
        flat = stacks.reshape(-1, *stacks.shape[2:])
        batch = 64
        predicted = np.concatenate([sess.run(score, {images: flat[i:i + batch]})
                                    for i in range(0, len(flat), batch)])
        predicted = predicted.reshape(len(items), crops).mean(axis=1)
        result = metrics.summary(predicted, targets)
        history.append({"step": step, "srocc": result["srocc"], "plcc": result["plcc"]})
        result.update(step=step, history=list(history), crops=crops)
        log(f"validation srocc {result['srocc']:.4f} plcc {result['plcc']:.4f} "
            f"({len(items)} images) at step {step}")
        return result

    return eval_fn


def train(config, init_checkpoint, train_dir, device="auto", log=print):
    """Fine-tunes as configured; resumes from `train_dir` when it holds a checkpoint.

    Args:
      config: `rankiqa.config.FinetuneConfig`.
      init_checkpoint: the stage-one training directory or checkpoint prefix.
      train_dir: output directory.

    Returns:
      dict from `loop.run_loop` plus ``eval_path`` and ``restore_report``.
    """
    data_cfg, train_cfg, transfer = config.data, config.train, config.finetune
    if not init_checkpoint and not config.net.init_from:
        raise ValueError("finetune needs --init-checkpoint (the stage-one output directory), "
                         "or net.init_from for a start without stage one")
    if init_checkpoint:
        init_checkpoint = checkpoints.resolve_checkpoint(init_checkpoint)
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
                                   deterministic=train_cfg.deterministic)
    images, targets = tf.data.make_one_shot_iterator(dataset).get_next()

    with tf.device(device_name):
        # ---- network: the stage-one backbone and a fresh one-score head
        global_step = tf.train.get_or_create_global_step()
        scores, _ = network_fn(network_fn.preprocess(images), is_training=True)

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
        variables_to_train, update_ops = None, None
        if transfer.trainable_scopes:
            variables_to_train = [v for v in tf.trainable_variables()
                                  if checkpoints.in_scopes(v.op.name, transfer.trainable_scopes)]
            if not variables_to_train:
                raise ValueError(f"finetune.trainable_scopes {list(transfer.trainable_scopes)} "
                                 "match no trainable variable")
            # frozen layers keep their batch-norm statistics too, so they stay bit-identical
            update_ops = [op for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)
                          if checkpoints.in_scopes(op.name, transfer.trainable_scopes)]
        multipliers = {v: transfer.head_lr_multiplier for v in tf.trainable_variables()
                       if checkpoints.in_scopes(v.op.name, [network_fn.head_scope])
                       and (variables_to_train is None or v in variables_to_train)}
        train_op, learning_rate = loop.build_train_op(
            total_loss, config.optim, global_step, variables_to_train=variables_to_train,
            gradient_multipliers=multipliers or None, update_ops=update_ops)
        eval_fn = build_mos_evaluator(network_fn, parts["val"], data_cfg, log)

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
        init_fn=loop.chain_init_fns(pretrained_init, checkpoint_init),
        eval_fn=write_eval if eval_fn else None, log=log, images_per_step=data_cfg.batch_size)
    result["eval_path"] = eval_path if eval_fn else None
    result["restore_report"] = report
    return result
