"""Stage one, `rankiqa train-rank`: learn to rank synthetically distorted images.

Reads top to bottom: data (rank list -> train / held-out references -> tf.data), network (one
shared backbone, one pass over references x levels), loss (ranking hinge + weight decay), loop.
"""

import os

import numpy as np

from rankiqa import checkpoints, losses, metrics, nets
from rankiqa.compat import tf
from rankiqa.config import to_dict
from rankiqa.data import lists, pipeline
from rankiqa.siamese import one_pass_scores
from rankiqa.train import loop

EVAL_NAME = "eval.json"


def imagenet_init_fn(net_cfg, network_fn, log):
    """``init_fn`` restoring an official slim ImageNet checkpoint (``resnet_v2_50/...``) onto
    our scope, its classifier skipped and the report logged; None when none is configured."""
    if not net_cfg.init_checkpoint:
        return None
    official = (net_cfg.init_checkpoint_scope
                or nets.official_scopes.get(net_cfg.name, network_fn.scope))
    assignment, report = checkpoints.build_restore_map(
        net_cfg.init_checkpoint, exclude_scopes=[network_fn.head_scope],
        name_map=[(network_fn.scope + "/", official + "/")], ignore_missing_vars=True)
    for line in report.lines():
        log(line)
    return checkpoints.build_init_fn(assignment, net_cfg.init_checkpoint)


def build_rank_evaluator(network_fn, groups, data_cfg, log):
    """``eval_fn(session, step)``: held-out rank_accuracy (overall and per family), scores
    averaged over `data_cfg.eval_crops` fixed crops. Built in the training graph (reused
    variables, inference-mode batch norm)."""
    if not groups:
        return None
    levels = data_cfg.levels
    crop = data_cfg.eval_crop_size or data_cfg.crop_size
    pipeline.check_sizes(groups, crop)
    iterator = tf.data.make_initializable_iterator(
        pipeline.eval_rank_dataset(groups, crop, data_cfg.eval_crops))
    images = iterator.get_next()
    score, _ = network_fn(network_fn.preprocess(images), is_training=False, reuse=True)
    # [crops * levels] -> mean over crops -> [levels]
    group_scores = tf.reduce_mean(tf.reshape(score, [data_cfg.eval_crops, levels]), axis=0)
    history = []

    def eval_fn(sess, step):
        sess.run(iterator.initializer)
        all_scores = np.stack([sess.run(group_scores) for _ in groups])  # [groups, levels]
        per_family = {}
        for family in sorted({g.distortion for g in groups}):
            rows = [k for k, g in enumerate(groups) if g.distortion == family]
            per_family[family] = metrics.rank_accuracy(all_scores[rows])
        accuracy = metrics.rank_accuracy(all_scores)
        history.append({"step": step, "rank_accuracy": accuracy})
        result = {"step": step, "rank_accuracy": accuracy, "per_distortion": per_family,
                  "held_out_references": sorted({g.reference for g in groups}),
                  "groups": len(groups), "crops": data_cfg.eval_crops, "crop_size": crop,
                  "history": list(history)}
        log(f"held-out rank_accuracy {accuracy:.4f} at step {step} "
            f"({', '.join(f'{k} {v:.3f}' for k, v in per_family.items())})")
        return result

    return eval_fn


def train(config, train_dir, device="auto", log=print):
    """Trains stage one as configured; resumes from `train_dir` when it holds a checkpoint.

    Args:
      config: `rankiqa.config.RankConfig`.
      train_dir: output directory (checkpoints, TensorBoard events, eval.json, rankiqa.json).
      device: auto | cpu | gpu.
      log: callable for progress lines.

    Returns:
      dict from `loop.run_loop`, plus ``eval_path``.
    """
    data_cfg, train_cfg = config.data, config.train
    if not data_cfg.rank_list:
        raise ValueError("train-rank needs data.rank_list (make one with `rankiqa make-rank-data`)")
    network_fn = nets.get_network_fn(config.net.name, weight_decay=config.net.weight_decay,
                                     batch_norm_decay=config.net.batch_norm_decay)
    loss_fn = losses.get_rank_loss_fn(train_cfg.loss)
    device_name = loop.get_device(device)
    os.makedirs(train_dir, exist_ok=True)
    eval_path = os.path.join(train_dir, EVAL_NAME)

    tf.reset_default_graph()
    loop.set_determinism(train_cfg)

    # ---- data: whole references held out, so accuracy is measured on unseen content
    groups = lists.read_rank_list(data_cfg.rank_list, levels=data_cfg.levels,
                                  distortions=data_cfg.distortions)
    train_groups, held_out = lists.split_by_reference(groups, data_cfg.holdout_references,
                                                      train_cfg.seed)
    if len(train_groups) < data_cfg.images_per_batch:
        raise ValueError(f"{len(train_groups)} training groups cannot fill a batch of "
                         f"data.images_per_batch={data_cfg.images_per_batch}")
    pipeline.check_sizes(train_groups, data_cfg.crop_size)
    log(f"{len(train_groups)} training groups, {len(held_out)} held-out groups "
        f"({data_cfg.holdout_references} references)")
    dataset = pipeline.rank_dataset(train_groups, data_cfg.crop_size, data_cfg.images_per_batch,
                                    seed=train_cfg.seed, cache=data_cfg.cache_decoded,
                                    deterministic=train_cfg.deterministic)
    images = tf.data.make_one_shot_iterator(dataset).get_next()

    with tf.device(device_name):
        # ---- network: one backbone, one pass, scores [references, levels]
        global_step = tf.train.get_or_create_global_step()
        scores, _ = one_pass_scores(network_fn, network_fn.preprocess(images), data_cfg.levels,
                                    is_training=True)

        # ---- loss: ranking hinge over every ordered pair, plus weight decay
        rank_loss = loss_fn(scores, train_cfg.margin)
        total_loss = tf.add(rank_loss, tf.losses.get_regularization_loss(), name="total_loss")
        variables_to_train, update_ops = loop.select_trainable(train_cfg.trainable_scopes,
                                                               "train.trainable_scopes")
        train_op, learning_rate = loop.build_train_op(
            total_loss, config.optim, global_step, variables_to_train=variables_to_train,
            update_ops=update_ops)
        eval_fn = build_rank_evaluator(network_fn, held_out, data_cfg, log)

    def write_eval(sess, step):
        result = eval_fn(sess, step)
        loop.write_json_atomic(eval_path, result)
        return result

    pretrained_init = loop.pretrained_init_fn(config.net, log)
    imagenet_init = imagenet_init_fn(config.net, network_fn, log)
    loop.write_json_atomic(os.path.join(train_dir, loop.RUN_INFO_NAME), {
        "stage": "rank", "net": config.net.name, "crop_size": data_cfg.crop_size,
        "config": to_dict(config)})

    # ---- loop
    result = loop.run_loop(
        train_dir, train_op, train_cfg.max_steps, train_cfg,
        scalars={"loss": rank_loss, "total_loss": total_loss, "learning_rate": learning_rate,
                 "rank_accuracy": losses.ranking_accuracy(scores)},
        init_fn=loop.chain_init_fns(pretrained_init, imagenet_init),
        eval_fn=write_eval if eval_fn else None, log=log, images_per_step=data_cfg.images_per_batch * data_cfg.levels)
    result["eval_path"] = eval_path if eval_fn else None
    return result
