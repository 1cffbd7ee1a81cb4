"""How to quantise a model to int8: calibration photos, method and layers kept in float, each
measured on BIQ2021's 600-photo validation part (seed 2021) against the float ONNX model.

    python scripts/studies/int8.py [--model NAME] [--shared ../shared/data] [--rows ROW,...]
        [--ladders 20]
    python scripts/studies/int8.py --write-ranges rankiqa/weights/builtin/NAME.int8_ranges.json

Each row quantises the model's ONNX conversion (`rankiqa.serve.quantize.quantize`) and reports
validation SROCC/PLCC (overall and within ss01/ss02/ss03), the per-photo score difference from
float (max, 99th percentile) and the bare network's views/s against float (best of 5 rounds of
a 32-view batch, interleaved) and, with ``--ladders N``, the pair accuracy of the synthetic
ladders (`rankiqa ladders`' families and seed) of N validation photos, the photos of the
built-in models' ladder figures (`scripts/recipes/biq2021_references.py --part val --count N
--no-kodak`). Every row keeps the input's normalisation in float (`quantize.input_nodes`). Rows:
  samples          scikit-image's sample photos, MinMax (what --engine onnx-int8 builds)
  train200         200 BIQ2021 training photos (not in the validation part), MinMax
  train200_float_ends  the same as train200, the stem's first convolution and the head kept float
  train200_7bit, samples_7bit  weights in 7 bits (`reduce_range`: no saturation without VNNI;
                               the others 8, `quantize.weight_bits` chooses by the CPU)
  train200_7bit_float_ends     both
  train25, train50, train800   as train200 with that many training photos (how many it takes)
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
from rankiqa.data import images as images_lib
from rankiqa.serve import evaluate, ladders, predict, quantize

ROWS = ("samples", "train200", "train200_float_ends", "train200_7bit", "samples_7bit",
        "train200_7bit_float_ends", "train25", "train50", "train800")


def split_items(shared):
    """BIQ2021's training and validation items as every recipe splits them (seed 2021, a fifth
    for validation)."""
    cfg = config_lib.load(config_lib.FinetuneConfig, None, [
        "data.dataset=biq2021", f"data.label_file={shared}/biq2021-train/mos.csv",
        "data.split_seed=2021", "data.val_fraction=0.2"]).data
    return evaluate.select_split(cfg, "train"), evaluate.select_split(cfg, "val")


def ladder_views(val, count, views):
    """Per ladder (photo x family), the views of its copies, mildest first: of the validation
    items `val`, the photos of `biq2021_references.py --part val --count N --no-kodak` (the
    split's seed, 2021, draws them), read as `rankiqa ladders` reads them (longer side at most
    512)."""
    chosen = np.random.default_rng(2021).permutation(len(val))[:count]
    out = {}
    for path in sorted(val[k].path for k in chosen):
        image = images_lib.load_image(path, 512)
        for family in ladders.DEFAULT_FAMILIES:
            copies = ladders.ladder(image, family, 0)
            out[(path, family)] = [views.apply(c).astype(np.float32) for c in copies]
    return out


def ladder_figures(sess, names, per_ladder):
    """Pair accuracy over all ladders and per family."""
    scored = {key: scores(sess, names, copies) for key, copies in per_ladder.items()}
    out = {"ladders": metrics.pair_accuracy(list(scored.values()))}
    for family in ladders.DEFAULT_FAMILIES:
        out[f"ladders_{family}"] = metrics.pair_accuracy(
            [s for (_, f), s in scored.items() if f == family])
    return {k: round(float(v), 4) for k, v in out.items()}


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
    parser.add_argument("--ladders", type=int, default=0, metavar="N",
                        help="also the ladders of N validation photos (the built-ins use 20)")
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
        quantize.quantize(model, calibration, names[0], ranges=args.write_ranges)
        return print(f"wrote {args.write_ranges}")
    float_session = session(model)
    float_scores = scores(float_session, names, val_arrays)
    per_ladder = ladder_views(val, args.ladders, views) if args.ladders else {}

    def on_ladders(sess):
        return ladder_figures(sess, names, per_ladder) if per_ladder else {}

    print(json.dumps({"row": "float", **figures(float_scores, val), **on_ladders(float_session)}),
          flush=True)
    batch = np.concatenate(val_arrays[:16])
    for row in args.rows.split(","):
        source = row.split("_")[0]
        if source not in sources:  # trainN: N other training photos, drawn as train200's
            chosen = np.random.default_rng(0).choice(len(train), int(source[5:]), replace=False)
            sources[source] = [train[k].path for k in chosen]
        calibration, _ = quantize.calibration_views(sources[source], views)
        started = time.time()
        int8 = quantize.quantize(model, calibration, names[0],
                                 exclude=float_ends(model) if row.endswith("float_ends") else (),
                                 bits=7 if "_7bit" in row else 8)
        built_s = time.time() - started
        int8_session = session(int8)
        int8_scores = scores(int8_session, names, val_arrays)
        speed = views_per_s({"float": float_session, "int8": int8_session}, names, batch)
        diff = np.abs(int8_scores - float_scores)
        print(json.dumps({"row": row, **figures(int8_scores, val), **on_ladders(int8_session),
                          "max_difference": round(float(diff.max()), 4),
                          "p99_difference": round(float(np.percentile(diff, 99)), 4),
                          "int8_over_float_views_s": round(speed["int8"] / speed["float"], 3),
                          "float_views_s": round(speed["float"], 1),
                          "built_s": round(built_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
