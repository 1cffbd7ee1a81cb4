"""Integer scoring: a model's ONNX graph quantised to int8 by ONNX Runtime's static quantiser,
calibrated on views of photos, and what that changes against float.

The recipe (`RECIPE`): QDQ format, weights int8 per output channel (8 bits where the CPU
has integer dot-product instructions, else 7: `weight_bits`), activations uint8, their ranges
the calibration views' (MinMax), every layer quantised but the input's normalisation
(`input_nodes`) and those named in ``exclude``; `scripts/studies/int8.py` chose it on
BIQ2021's validation part. EfficientNet-Lite was made for it (ReLU6, no squeeze-and-excite).
The speed it buys depends on the CPU's integer dot-product units: BENCHMARKS.md, P13.
"""

import hashlib
import json
import os
import tempfile

import numpy as np

from rankiqa import metrics
from rankiqa.data import images as images_lib
from rankiqa.data import samples
from rankiqa.preprocessing import preprocess
from rankiqa.errors import InputError
from rankiqa.serve import engines

METHODS = ("minmax", "percentile")
RECIPE = {"format": "QDQ", "weights": "int8 per channel",
          "activations": "uint8", "calibration": "MinMax",
          "float": "the input's normalisation, up to the first convolution"}
# what a model without shipped ranges is calibrated on (`rankiqa.data.samples`): the same on
# every machine, and nothing to download
CALIBRATION_PHOTOS = "scikit-image's sample photos"
# x86's integer dot-product instructions: with them ONNX Runtime's u8 x s8 products are summed
# exactly in 32 bits; without them (AVX2's vpmaddubsw) pairs of products saturate in 16 bits
DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})


def weight_bits(cpuinfo="/proc/cpuinfo"):
    """The bits the weights use on this CPU: 8 where it has `DOT_PRODUCT_FLAGS`, else 7
    (`reduce_range`, ONNX Runtime's advice). Measured on BIQ2021's validation part (P13):
    with VNNI, 8 bits lose 0.0014 SROCC and 0.0016 ladder pair accuracy, 7 bits 0.0034 and
    0.0062; without it 8-bit products saturate (on machine B, the input quantised too, 8 bits
    lost 0.011 SROCC, 7 bits 0.0025).
    A CPU whose flags cannot be read (not Linux) gets 7, safe on every CPU. The same model and
    ranges give the same int8 scores on every CPU of one kind, not across the two kinds."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return 7
    return 8 if DOT_PRODUCT_FLAGS & set(flags) else 7


def sample_photos():
    """The paths of `CALIBRATION_PHOTOS`."""
    folder = samples.skimage_data_dir()
    return [os.path.join(folder, name) for name in samples.SAMPLE_PHOTOS]


def calibration_views(paths, views):
    """Each readable photo's views ``[count, crop, crop, 3]`` as float32, as the network gets
    them; unreadable ones are left out. Returns (the arrays, the paths they came from)."""
    arrays, used = [], []
    for path in paths:
        try:
            arrays.append(views.apply(images_lib.load_image(path)).astype(np.float32))
        except images_lib.BadImageError:
            continue
        used.append(path)
    return arrays, used


def quantize(model, calibration, input_name, method="minmax", exclude=(), bits=None,
             ranges=None):
    """`model` (float ONNX bytes) quantised to int8 (`RECIPE`), calibrated on `calibration`
    (float32 view arrays, each one network input); `exclude` names nodes kept in float beside
    the input's normalisation (`input_nodes`); `bits`: the weights' bits, 8 or 7
    (`reduce_range`), by default `weight_bits` of this CPU. `ranges`: a JSON file of the
    activations' ranges (ONNX Runtime's calibration cache): read when it exists, in place of
    `calibration`; else written from it.

    Returns:
      the int8 model's bytes.
    Raises:
      InputError: no calibration views, or an unknown `method`.
    """
    engines.require_onnx("onnxruntime", "onnx")
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose from {list(METHODS)}")
    if bits not in (None, 7, 8):
        raise InputError(f"weights are quantised to 7 or 8 bits, not {bits!r}")
    if not calibration and not (ranges and os.path.isfile(ranges)):
        raise InputError("no photo to calibrate on could be read")

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.left = iter(calibration)

        def get_next(self):
            views = next(self.left, None)
            return None if views is None else {input_name: views}

    model = _unit_pools_valid(model)
    calibrate = {"minmax": q.CalibrationMethod.MinMax,
                 "percentile": q.CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="rankiqa-int8-") as work:
        source, prepared, out = (os.path.join(work, n) for n in ("f.onnx", "p.onnx", "q.onnx"))
        with open(source, "wb") as f:
            f.write(model)
        # folds constants and infers shapes, as ONNX Runtime's quantiser asks of its input
        quant_pre_process(source, prepared, skip_optimization=True, skip_symbolic_shape=True)
        q.quantize_static(prepared, out, Reader(), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=calibrate,
                          nodes_to_exclude=input_nodes(model) + list(exclude),
                          reduce_range=(bits or weight_bits()) == 7,
                          **({"calibration_cache_path": ranges} if ranges else {}))
        with open(out, "rb") as f:
            return f.read()


def input_nodes(model):
    """The names of the nodes before the first convolution of `model` (ONNX bytes): the input's
    normalisation (scale, mean) and layout. They stay in float: elementwise on the whole input,
    ONNX Runtime's int8 kernels for them (QLinearMul with a broadcast constant) took a quarter
    of the int8 network's time, and the first convolution quantises its input anyway
    (BENCHMARKS.md, P13)."""
    import onnx

    nodes = onnx.load_from_string(model).graph.node
    first = next((k for k, n in enumerate(nodes) if n.op_type == "Conv"), 0)
    return [n.name for n in nodes[:first]]


def _unit_pools_valid(model):
    """`model` with its 1x1 pools (resnet_v2's strided shortcuts) padded VALID instead of SAME:
    the same output (a 1x1 window needs no padding), and ONNX Runtime's unoptimised MaxPool,
    which calibration runs, computes a negative SAME padding for them on even sizes and fails."""
    import onnx

    proto = onnx.load_from_string(model)
    changed = False
    for node in proto.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if (node.op_type in ("MaxPool", "AveragePool") and "kernel_shape" in attrs
                and set(attrs["kernel_shape"].ints) == {1} and "auto_pad" in attrs
                and attrs["auto_pad"].s in (b"SAME_UPPER", b"SAME_LOWER")):
            attrs["auto_pad"].s, changed = b"VALID", True
    return proto.SerializeToString() if changed else model


def compare(float_scores, int8_scores, labels=None):
    """What int8 changes: per-photo score differences (max, 99th percentile), the SROCC between
    the two engines' scores and, with `labels` (one per photo), each engine's labelled SROCC
    and PLCC."""
    float_scores, int8_scores = np.asarray(float_scores), np.asarray(int8_scores)
    diff = np.abs(int8_scores - float_scores)
    report = {"photos": int(len(diff)), "max_difference": float(diff.max()),
              "p99_difference": float(np.percentile(diff, 99)),
              "srocc_int8_float": (float(metrics.srocc(int8_scores, float_scores))
                                   if len(diff) >= 3 else None)}
    if labels is not None:
        for name, scores in (("float", float_scores), ("int8", int8_scores)):
            report[f"srocc_{name}"] = float(metrics.srocc(scores, labels))
            report[f"plcc_{name}"] = float(metrics.plcc(scores, labels))
    return report


class Int8:
    """``--engine onnx-int8``'s variant of a model (`rankiqa.serve.engines.OnnxRunner`), its
    weights in `weight_bits` of this CPU. A built-in model is quantised with the activation
    ranges shipped beside its head (`ranges_file`: measured on 200 BIQ2021 training photos,
    `scripts/studies/int8.py --write-ranges`); any other model is calibrated on
    `CALIBRATION_PHOTOS` through its own `views`. Either way every machine of one kind (with or
    without VNNI) builds the same int8 model from the same float one (its cache name says the
    recipe and the bits)."""

    def __init__(self, views, ranges=None):
        self.views, self.ranges, self.bits = views, ranges, weight_bits()
        self.source = ("its shipped ranges (200 BIQ2021 training photos)" if ranges else
                       CALIBRATION_PHOTOS)

    def tag(self, model):
        import onnxruntime

        recipe = {**RECIPE, "weight_bits": self.bits, "views": self.views.as_dict(),
                  "photos": None if self.ranges else list(samples.SAMPLE_PHOTOS),
                  "ranges": self.ranges and preprocess.file_sha256(self.ranges),
                  "onnxruntime": onnxruntime.__version__}
        return "int8-" + hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

    def build(self, model, input_name):
        if self.ranges:
            return quantize(model, [], input_name, bits=self.bits, ranges=self.ranges)
        arrays, _ = calibration_views(sample_photos(), self.views)
        return quantize(model, arrays, input_name, bits=self.bits)


def check_int8(ref):
    """Refuses int8 for a built-in model that ships no activation ranges: its int8 variant
    was measured outside the tolerance (BENCHMARKS.md, P13: the DINOv2 models' vision
    transformer lost 0.055 validation SROCC in 8 bits, hed-vgg16 0.22), so none is built. A
    model of your own may always be quantised (measure it with ``evaluate --engine
    onnx-int8``).

    Raises:
      InputError: `ref` (None: the default) is such a built-in model.
    """
    from rankiqa.weights import builtin

    name = ref or builtin.DEFAULT
    if not isinstance(name, str) or not builtin.is_builtin(name) or ranges_file(name):
        return
    offered = [m for m in builtin.BUILTIN if ranges_file(m)]
    raise InputError(f"{name}: {builtin.get(name).int8}; score it with --engine onnx, or in "
                     f"int8 one of {', '.join(offered)}")


def ranges_file(ref):
    """The shipped activation ranges of the built-in model `ref`, or None."""
    from rankiqa.weights import builtin

    if not builtin.is_builtin(ref or builtin.DEFAULT):
        return None
    name = (ref or builtin.DEFAULT).replace("-", "_")
    path = os.path.join(os.path.dirname(builtin.__file__), f"{name}.int8_ranges.json")
    return path if os.path.isfile(path) else None


def int8_export(model, views, input_name, output_name, photos=None, count=200, seed=0):
    """`model` (float ONNX bytes) quantised on `count` of `photos` (paths; None: the sample
    photos, `CALIBRATION_PHOTOS`), chosen by a seeded shuffle, and compared with float on the
    photos left (up to 500; the calibration photos themselves when none are left).

    Returns:
      (the int8 model's bytes, its report: `RECIPE`, the weights' bits, the photos used,
      `compare`'s figures).
    """
    photos = list(sample_photos() if photos is None else photos)
    np.random.default_rng(seed).shuffle(photos)
    arrays, used = calibration_views(photos[:count], views)
    bits = weight_bits()
    int8 = quantize(model, arrays, input_name, bits=bits)
    held_out = photos[count:count + 500]
    checks = calibration_views(held_out, views)[0] if held_out else arrays
    scores = [_scores(m, input_name, output_name, checks) for m in (model, int8)]
    report = {**RECIPE, "weight_bits": bits, "calibration_photos": len(used),
              "checked_on": "held-out photos" if held_out else "the calibration photos",
              **compare(*scores)}
    return int8, report


def _scores(model, input_name, output_name, arrays):
    """Each photo's score (the mean of its views) from ONNX Runtime."""
    session = engines._ort_session(engines.require_onnx("onnxruntime"), model)
    return np.array([session.run([output_name], {input_name: a})[0].mean() for a in arrays])
