"""Writes the reference list for stage one of the BIQ2021 recipe: a seeded sample of the
*training* part of the BIQ2021 split (the same split fine-tuning uses, so no validation image is
ever a reference) plus the Kodak photos.

    python scripts/recipes/biq2021_references.py SHARED_DATA OUT.txt --config configs/finetune_biq2021_tiny.yaml --count 400

With ``--part val --no-kodak`` it lists validation photos instead: the photos of `rankiqa
ladders`, which no stage trains on.
"""

import argparse
import os

import numpy as np

from rankiqa import config as config_lib
from rankiqa.data import mos


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shared_data", help="folder holding biq2021-train/ and kodak/")
    parser.add_argument("out", help="list file to write (absolute paths, one per line)")
    parser.add_argument("--config", required=True, help="the fine-tuning config (its split)")
    parser.add_argument("--count", type=int, default=400, help="images of the part to use")
    parser.add_argument("--part", choices=["train", "val"], default="train")
    parser.add_argument("--no-kodak", action="store_true", help="leave the Kodak photos out")
    parser.add_argument("--kind", choices=["ss01", "ss02", "ss03"],
                        help="only photos of this kind (the subset its file name names)")
    args = parser.parse_args()
    cfg = config_lib.load(config_lib.FinetuneConfig, args.config).data
    items = mos.read_dataset("biq2021", os.path.join(args.shared_data, "biq2021-train", "mos.csv"))
    train = mos.split(items, cfg.val_fraction, cfg.test_fraction, cfg.split_seed,
                      cfg.split_index)[args.part]
    if args.kind:
        train = [it for it in train if mos.biq2021_kind(it.path) == args.kind]
    chosen = np.random.default_rng(cfg.split_seed).permutation(len(train))[:args.count]
    kodak = os.path.join(args.shared_data, "kodak")
    paths = sorted(train[k].path for k in chosen)
    if not args.no_kodak:
        paths += sorted(os.path.join(kodak, n) for n in os.listdir(kodak) if n.endswith(".png"))
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("".join(os.path.abspath(p) + "\n" for p in paths))
    print(f"{len(paths)} photos ({len(chosen)} BIQ2021 {args.part} images"
          f"{'' if args.no_kodak else ' + Kodak'}) -> {args.out}")


if __name__ == "__main__":
    main()
