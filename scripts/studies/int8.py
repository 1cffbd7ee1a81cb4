"""How to quantise a model to int8: calibration photos, method and layers kept in float, each
measured on BIQ2021's 600-photo validation part (seed 2021) against the float ONNX model.

    python scripts/studies/int8.py [--model NAME] [--shared ../shared/data] [--rows ROW,...]
    python scripts/studies/int8.py --write-ranges rankiqa/weights/builtin/NAME.int8_ranges.json

Each row quantises the model's ONNX conversion (`rankiqa.serve.quantize.quantize`) and reports
validation SROCC/PLCC (overall and within ss01/ss02/ss03), the per-photo score difference from
float (max, 99th percentile) and the bare network's views/s against float (best of 5 rounds of
a 32-view batch, interleaved). Rows:
  samples          scikit-image's sample photos, MinMax (what --engine onnx-int8 builds)
  train200         200 BIQ2021 training photos (not in the validation part), MinMax
  train200_float_ends  the same as train200, the stem's first convolution and the head kept float
  train200_7bit, samples_7bit  weights in 7 bits (`reduce_range`: no saturation without VNNI)
  train200_7bit_float_ends     both
Percentile calibration (histograms of every activation) ran out of 24 GB on 200 photos.
--write-ranges writes the activation ranges of the 200 training photos (ONNX Runtime's
calibration cache), which `--engine onnx-int8` uses for a built-in model shipped with them.
"""

import argparse
import json
import os
import time

import numpy as np

from rankiqa import config as config_lib
from rankiqa import metrics
from rankiqa.data import samples
from rankiqa.serve import evaluate, predict, quantize

ROWS = ("samples", "train200", "train200_float_ends", "train200_7bit", "samples_7bit",
        "train200_7bit_float_ends")


def split_items(shared):
    cfg = config_lib.load(config_lib.FinetuneConfig, None, [
        "data.dataset=biq2021", f"data.label_file={shared}/biq2021-train/mos.csv",
        "data.split_seed=2021", "data.val_fraction=0.2"])
    return evaluate.select_split(cfg.data, "train"), evaluate.select_split(cfg.data, "val")


def float_ends(model):
    """Names of the first convolution and of every node after the global pooling."""
    import onnx

    nodes = onnx.load_from_string(model).graph.node
    first = next(n.name for n in nodes if n.op_type == "Conv")
    pooled = max(k for k, n in enumerate(nodes) if n.op_type in ("ReduceMean", "GlobalAveragePool"))
    return [first] + [n.name for n in nodes[pooled + 1:]]


def session(model):
    import onnxruntime

    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def scores(sess, names, arrays):
    return np.array([sess.run([names[1]], {names[0]: a})[0].mean() for a in arrays])


def views_per_s(sessions, names, batch, rounds=5):
    best = {k: 0.0 for k in sessions}
    for _ in range(rounds):
        for k, sess in sessions.items():
            started = time.perf_counter()
            for _ in range(3):
                sess.run([names[1]], {names[0]: batch})
            best[k] = max(best[k], 3 * len(batch) / (time.perf_counter() - started))
    return best


def figures(predicted, items):
    labels = np.array([it.score for it in items])
    out = {"srocc": metrics.srocc(predicted, labels), "plcc": metrics.plcc(predicted, labels)}
    for kind in ("ss01", "ss02", "ss03"):
        chosen = np.array([it.group == kind for it in items])
        out[kind] = metrics.srocc(predicted[chosen], labels[chosen])
    return {k: round(float(v), 4) for k, v in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--shared", default="../shared/data")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--write-ranges", metavar="JSON")
    args = parser.parse_args()
    train, val = split_items(args.shared)
    with predict.load_model(args.model, engine="onnx") as loaded:
        runner, views = loaded.scorer.onnx, loaded.views
        model = open(runner.cached, "rb").read()
        names = (runner.input_name, runner.output_name)
    val_arrays, _ = quantize.calibration_views([it.path for it in val], views)
    rng = np.random.default_rng(0)
    train_paths = [train[k].path for k in rng.choice(len(train), 200, replace=False)]
    folder = samples.skimage_data_dir()
    sources = {"samples": [os.path.join(folder, n) for n in samples.SAMPLE_PHOTOS],
               "train200": train_paths}
    if args.write_ranges:
        calibration, _ = quantize.calibration_views(train_paths, views)
        if os.path.exists(args.write_ranges):
            raise SystemExit(f"{args.write_ranges} exists: remove it to measure again")
        quantize.quantize(model, calibration, names[0], reduce_range=True,
                          ranges=args.write_ranges)
        return print(f"wrote {args.write_ranges}")
    float_session = session(model)
    float_scores = scores(float_session, names, val_arrays)
    print(json.dumps({"row": "float", **figures(float_scores, val)}), flush=True)
    batch = np.concatenate(val_arrays[:16])
    for row in args.rows.split(","):
        source = "samples" if row.startswith("samples") else "train200"
        calibration, _ = quantize.calibration_views(sources[source], views)
        started = time.time()
        int8 = quantize.quantize(model, calibration, names[0],
                                 exclude=float_ends(model) if row.endswith("float_ends") else (),
                                 reduce_range="_7bit" in row)
        built_s = time.time() - started
        int8_session = session(int8)
        int8_scores = scores(int8_session, names, val_arrays)
        speed = views_per_s({"float": float_session, "int8": int8_session}, names, batch)
        diff = np.abs(int8_scores - float_scores)
        print(json.dumps({"row": row, **figures(int8_scores, val),
                          "max_difference": round(float(diff.max()), 4),
                          "p99_difference": round(float(np.percentile(diff, 99)), 4),
                          "int8_over_float_views_s": round(speed["int8"] / speed["float"], 3),
                          "float_views_s": round(speed["float"], 1),
                          "built_s": round(built_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
