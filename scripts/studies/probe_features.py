"""Frozen pooled features of a recipe's images, saved once for probe studies (README, "BIQ2021
with EfficientNet-Lite2 and DINOv2": the views ablation and the ranking-aware probe).

For a stage-two config with a pretrained start, writes to OUT_DIR one .npz per part:
  val.npz, train.npz   features [images, views, d] of the seeded split's images (the config's
                       label file plus its extra training files), their scores and paths;
  rank.npz             features [groups, levels, views, d] of the first --rank-groups groups of
                       RANK_LIST (reference + distortion levels, mildest first);
  ladders.npz          features [photos * families, 6, views, d] of ladders (rankiqa.serve.ladders)
                       made from the photos of LADDER_PHOTOS.
Views: `--views` pyramid views of the config's crop (3: native centre, an intermediate scale,
the whole picture; views 0 and 2 are exactly the 2-view pyramid the recipes use).
A part already written is kept (delete it to redo it).

  python scripts/studies/probe_features.py CONFIG OUT_DIR --rank-list RANK_LIST \
      --ladder-photos LADDER_PHOTOS [--set key=value ...]
"""

import argparse
import io
import os
import sys
import time

import numpy as np

from rankiqa import config as config_lib
from rankiqa.run import rundir
from rankiqa.serve import ladders
from rankiqa.data import lists, mos
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import views as views_lib
from rankiqa.serve.scoring import load_scorer


def features_of(scorer, items, what):
    """``[len(items), views, d]``: each item's features on the scorer's views
    (`Scorer.values`), with a progress line every 100 items."""
    start = time.time()

    def progress(done, total):
        if done and (done // 100 > (done - scorer.batch_size) // 100 or done == total):
            print(f"{what}: {done}/{total} ({done / (time.time() - start):.2f}/s)", flush=True)

    return scorer.values(items, tensor="features", progress=progress)


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

    view = views_lib.Views(data_cfg.crop_size, args.views, "pyramid")
    scorer = load_scorer(config.init.source, net=config.net.name,
                         pooled_blocks=config.net.pooled_blocks)
    scorer.views = view
    print(f"{config.init.source}: {len(scorer.model.report.restored)} arrays restored; "
          f"{view.describe()}", flush=True)

    def save(name, **arrays):
        path = os.path.join(args.out_dir, name)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        rundir.write_atomic(path, buffer.getvalue())  # a stopped run leaves no half part
        print(f"wrote {path}", flush=True)

    path = os.path.join(args.out_dir, "ladders.npz")
    if not os.path.exists(path):
        photos = images_lib.read_path_list(args.ladder_photos)
        rows = [(p, f) for p in photos for f in ladders.DEFAULT_FAMILIES]
        x = []
        for n, photo in enumerate(photos, start=1):  # a photo's ladders at a time: bounded memory
            image = images_lib.load_image(photo, 512)
            copies = [c for f in ladders.DEFAULT_FAMILIES for c in ladders.ladder(image, f, 0)]
            x.append(scorer.values(copies, tensor="features"))
            if n % 10 == 0 or n == len(photos):
                print(f"ladders: {n}/{len(photos)} photos", flush=True)
        x = np.concatenate(x).reshape(len(rows), -1, args.views, x[0].shape[-1])
        save("ladders.npz", features=x.astype(np.float32), photos=[r[0] for r in rows],
             families=[r[1] for r in rows])

    path = os.path.join(args.out_dir, "rank.npz")
    if not os.path.exists(path):
        groups = lists.read_rank_list(args.rank_list)[:args.rank_groups]
        levels = len(groups[0].paths)
        x = features_of(scorer, [p for g in groups for p in g.paths], "rank-group images")
        save("rank.npz", features=x.reshape(len(groups), levels, *x.shape[1:]).astype(np.float32),
             references=[g.reference for g in groups], families=[g.distortion for g in groups])

    parts = mos.load_splits(data_cfg)
    for part in ("val", "train"):
        path = os.path.join(args.out_dir, f"{part}.npz")
        if os.path.exists(path):
            continue
        items = parts[part]
        x = features_of(scorer, [it.path for it in items], part)
        save(f"{part}.npz", features=x.astype(np.float32),
             scores=np.array([it.score for it in items]), paths=[it.path for it in items])
    scorer.close()
    return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
