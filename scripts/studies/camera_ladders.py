"""The table of scripts/studies/camera_ladders.sh: each model's validation SROCC / PLCC overall
and within each kind of photo, and its ladder pair accuracy on the datasets' and the camera's
families.

    python scripts/studies/camera_ladders.py RUN_DIR MODEL_NAME...
"""

import json
import os
import sys

from rankiqa.data import distortions

KINDS = ("ss01", "ss02", "ss03")


def ladder_accuracy(families, names):
    """The mean pair accuracy over `names` that `families` (ladders.json's) holds."""
    got = [families[f]["pair_accuracy"] for f in names if f in families]
    return sum(got) / len(got) if got else float("nan")


def row(run, name):
    summary = json.load(open(os.path.join(run, f"eval_{name}", "summary.json")))
    ladders = json.load(open(os.path.join(run, f"ladders_{name}", "ladders.json")))["families"]
    kinds = " | ".join(f"{summary['per_group'][k]['srocc']:.4f}" for k in KINDS)
    camera = ", ".join(f"{f} {ladders[f]['pair_accuracy']:.2f}"
                       for f in distortions.CAMERA_DISTORTIONS if f in ladders)
    datasets = ladder_accuracy(ladders, ("gblur", "wn", "jpeg", "contrast"))
    return (f"| {name} | {summary['srocc']:.4f} / {summary['plcc']:.4f} | {kinds} | "
            f"{datasets:.3f} | {ladder_accuracy(ladders, distortions.CAMERA_DISTORTIONS):.3f} "
            f"({camera}) |")


def main(argv):
    run, names = argv[0], argv[1:]
    print("| model | validation SROCC / PLCC | ss01 | ss02 | ss03 | ladders: blur, noise, "
          "JPEG, contrast | ladders: the camera's |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        print(row(run, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
