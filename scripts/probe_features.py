"""Frozen pooled features of a recipe's images, saved once for probe studies (README, "BIQ2021
with EfficientNet-Lite2 and DINOv2": the views ablation and the ranking-aware probe).

For a stage-two config with a pretrained start, writes to OUT_DIR one .npz per part:
  val.npz, train.npz   features [images, views, d] of the seeded split's images (the config's
                       label file plus its extra training files), their scores and paths;
  rank.npz             features [groups, levels, views, d] of the first --rank-groups groups of
                       RANK_LIST (reference + distortion levels, mildest first);
  ladders.npz          features [photos * families, 6, views, d] of ladders (rankiqa.ladders)
                       made from the photos of LADDER_PHOTOS.
Views: `--views` pyramid views of the config's crop (3: native centre, an intermediate scale,
the whole picture; views 0 and 2 are exactly the 2-view pyramid the recipes use).
A part already written is kept (delete it to redo it).

  python scripts/probe_features.py CONFIG OUT_DIR --rank-list RANK_LIST \
      --ladder-photos LADDER_PHOTOS [--set key=value ...]
"""

import argparse
import io
import os
import sys
import time

import numpy as np

from rankiqa import config as config_lib
from rankiqa import ladders, nets, pretrained, rundir, weights
from rankiqa.compat import tf
from rankiqa.data import lists, mos, views as views_lib
from rankiqa.scoring import Scorer


def features_of(scorer, session, images_of, count, what):
    """``[count, views, d]``: `images_of(k)` gives item k's list of uint8 images (one or more;
    each cropped into the scorer's views)."""
    out, start = [], time.time()
    for k in range(count):
        crops = np.concatenate([scorer.views.apply(im) for im in images_of(k)])
        f = scorer.run(scorer.features, crops, session)
        out.append(f.reshape(-1, scorer.views.count, f.shape[-1]))
        if (k + 1) % 100 == 0 or k + 1 == count:
            rate = (k + 1) / (time.time() - start)
            print(f"{what}: {k + 1}/{count} ({rate:.2f}/s)", flush=True)
    return np.stack(out) if out[0].shape[0] > 1 else np.concatenate(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("out_dir")
    parser.add_argument("--rank-list", required=True)
    parser.add_argument("--rank-groups", type=int, default=400)
    parser.add_argument("--ladder-photos", required=True)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    config = config_lib.load(config_lib.FinetuneConfig, args.config, args.set)
    data_cfg = config.data
    os.makedirs(args.out_dir, exist_ok=True)

    network_fn = nets.get_network_fn(config.net.name, pooled_blocks=config.net.pooled_blocks)
    view = views_lib.Views(data_cfg.crop_size, args.views, "pyramid")
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, None, None, 3])
        score, end_points = network_fn(network_fn.preprocess(images), is_training=False)
        feats = tf.reshape(end_points["features"], [tf.shape(images)[0], -1])
        scorer = Scorer(images, score, view, features=feats, net_name=network_fn.name)
        session = tf.Session(graph=graph)
        session.run(tf.global_variables_initializer())
        report = weights.load_into(
            session, pretrained.get_pretrained_arrays(config.init.source, config.net.name))
    print(f"{config.init.source}: {len(report.restored)} arrays restored; "
          f"{view.describe()}", flush=True)

    def save(name, **arrays):
        path = os.path.join(args.out_dir, name)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        rundir.write_atomic(path, buffer.getvalue())  # a stopped run leaves no half part
        print(f"wrote {path}", flush=True)

    path = os.path.join(args.out_dir, "ladders.npz")
    if not os.path.exists(path):
        photos = views_lib.read_path_list(args.ladder_photos)
        rows = [(p, f) for p in photos for f in ladders.DEFAULT_FAMILIES]
        loaded = {p: views_lib.load_image(p, 512) for p in photos}
        x = features_of(scorer, session,
                        lambda k: ladders.ladder(loaded[rows[k][0]], rows[k][1], 0),
                        len(rows), "ladders")
        save("ladders.npz", features=x.astype(np.float32), photos=[r[0] for r in rows],
             families=[r[1] for r in rows])

    path = os.path.join(args.out_dir, "rank.npz")
    if not os.path.exists(path):
        groups = lists.read_rank_list(args.rank_list)[:args.rank_groups]
        x = features_of(scorer, session,
                        lambda k: [views_lib.load_image(p) for p in groups[k].paths],
                        len(groups), "rank groups")
        save("rank.npz", features=x.astype(np.float32),
             references=[g.reference for g in groups], families=[g.distortion for g in groups])

    parts = mos.load_splits(data_cfg)
    for part in ("val", "train"):
        path = os.path.join(args.out_dir, f"{part}.npz")
        if os.path.exists(path):
            continue
        items = parts[part]
        x = features_of(scorer, session, lambda k: [views_lib.load_image(items[k].path)],
                        len(items), part)
        save(f"{part}.npz", features=x.astype(np.float32),
             scores=np.array([it.score for it in items]), paths=[it.path for it in items])
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
