"""int8: --engine onnx-int8 (built once, cached, close to float) and export-onnx --int8."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from rankiqa import metrics
from rankiqa.cli import main
from rankiqa.errors import InputError
from rankiqa.preprocessing import preprocess
from rankiqa.serve import predict, quantize


def test_compare_reports_differences_and_agreement():
    report = quantize.compare([0.1, 0.2, 0.3, 0.4], [0.1, 0.25, 0.28, 0.4],
                              labels=[1.0, 2.0, 3.0, 4.0])
    assert report["photos"] == 4
    assert report["max_difference"] == pytest.approx(0.05)
    assert report["srocc_int8_float"] == pytest.approx(1.0)
    assert report["srocc_float"] == pytest.approx(1.0) and report["srocc_int8"] == 1.0
    report = quantize.compare([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert report["srocc_int8_float"] == pytest.approx(-1.0) and "srocc_float" not in report


def test_quantize_refuses_what_it_cannot_calibrate_on():
    with pytest.raises(InputError, match="no photo to calibrate on"):
        quantize.quantize(b"", [], "x")
    with pytest.raises(InputError, match="unknown calibration method 'kl'"):
        quantize.quantize(b"", [np.zeros((1, 2, 2, 3), np.float32)], "x", method="kl")


def test_the_int8_engine_is_built_once_cached_and_close_to_float(stage_one, photo_dir,
                                                                 monkeypatch):
    photos = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))
    with predict.load_model(stage_one, engine="onnx") as model:
        float_scores = model.score(photos)
    built = []
    real = quantize.quantize
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: built.append(1) or real(*a, **k))
    with predict.load_model(stage_one, engine="onnx-int8") as model:
        assert model.engine.startswith("onnx-int8 (calibrated on scikit-image's sample photos")
        cached = model.scorer.onnx.cached
        int8_scores = model.score(photos)
    assert built == [1] and ".int8-" in os.path.basename(cached)
    assert os.path.getsize(cached) < os.path.getsize(cached.split(".int8-")[0] + ".onnx")
    spread = float_scores.max() - float_scores.min()
    # a two-step tiny net is far from int8-friendly; the order survives, the values move
    assert np.abs(int8_scores - float_scores).max() < 0.25 * spread
    assert metrics.srocc(int8_scores, float_scores) > 0.9
    assert not np.array_equal(int8_scores, float_scores)  # integer arithmetic did run
    with predict.load_model(stage_one, engine="onnx-int8") as model:
        again = model.score(photos)
    assert built == [1]  # the second load read the cache
    np.testing.assert_array_equal(again, int8_scores)


def test_export_onnx_int8_writes_its_report_and_serves_alone(stage_one, photo_dir, tmp_path):
    out = tmp_path / "m.int8.onnx"
    result = CliRunner().invoke(main, ["export-onnx", "--model", stage_one, "--output", str(out),
                                       "--int8", "--calibration", photo_dir,
                                       "--calibration-count", "4"])
    assert result.exit_code == 0, result.output
    assert "int8: calibrated on 4 photos; on " in result.output
    spec = json.load(open(f"{out}.preprocess.json"))
    assert spec["int8"]["calibration_photos"] == 4
    assert spec["int8"]["checked_on"] == "held-out photos"
    assert spec["int8"]["photos"] == len(os.listdir(photo_dir)) - 4
    # the served code reads it as any export, and int8 operators are in it
    import onnx
    import onnxruntime

    graph = onnx.load(str(out)).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    loaded = preprocess.load_spec(f"{out}.preprocess.json", str(out))
    photo = sorted(os.listdir(photo_dir))[0]
    batch = preprocess.batch([os.path.join(photo_dir, photo)], loaded)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert np.isfinite(session.run(None, {loaded["input"]["name"]: batch})[0]).all()
    result = CliRunner().invoke(main, ["export-onnx", "--model", stage_one, "--output",
                                       str(tmp_path / "f.onnx"), "--calibration", photo_dir])
    assert result.exit_code == 2 and "go with --int8" in result.output


def float_model(run):
    """(the float ONNX bytes of the model in `run`, its views, its input's name)."""
    from rankiqa.serve import engines, scoring

    with scoring.load_scorer(run) as scorer:
        return (engines.onnx_model(scorer).SerializeToString(), scorer.views,
                scorer.images.name)


def test_the_input_normalisation_stays_float(stage_one, photo_dir):
    import onnx

    model, views, name = float_model(stage_one)
    photos = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))[:2]
    kept = quantize.input_nodes(model)
    nodes = onnx.load_from_string(model).graph.node
    first_conv = next(k for k, n in enumerate(nodes) if n.op_type == "Conv")
    assert kept == [n.name for n in nodes[:first_conv]] and kept  # scale, mean, layout
    int8 = onnx.load_from_string(quantize.quantize(
        model, quantize.calibration_views(photos, views)[0], name)).graph
    made_by = {out: n.op_type for n in int8.node for out in n.output}
    for node in int8.node:
        if node.name in kept:  # float in, float out: no dequantised input
            assert all(made_by.get(i) != "DequantizeLinear" for i in node.input), node.name
    conv = next(n for n in int8.node if n.op_type == "Conv")
    assert made_by[conv.input[0]] == made_by[conv.input[1]] == "DequantizeLinear"


def test_shipped_ranges_replace_calibration(stage_one, photo_dir, tmp_path):
    model, views, name = float_model(stage_one)
    photos = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))
    arrays, used = quantize.calibration_views(photos, views)
    assert used == photos
    ranges = tmp_path / "ranges.json"
    written = quantize.quantize(model, arrays, name, ranges=str(ranges))
    assert "TensorsData" in ranges.read_text()
    # read back with no photo at all: the same int8 model
    assert quantize.quantize(model, [], name, ranges=str(ranges)) == written
    with pytest.raises(InputError, match="no photo to calibrate on"):
        quantize.quantize(model, [], name, ranges=str(tmp_path / "absent.json"))
    # the default built-in model ships its ranges; a run folder has none
    assert quantize.ranges_file(None).endswith("biq2021_efficientnet_lite2_ranked.int8_ranges.json")
    assert quantize.ranges_file("biq2021-efficientnet-lite2").endswith(
        "builtin/biq2021_efficientnet_lite2.int8_ranges.json")
    assert quantize.ranges_file(stage_one) is None
    variant = quantize.Int8(views, str(ranges))
    assert variant.build(model, name) == written
    assert variant.tag(model) != quantize.Int8(views).tag(model)  # the recipe names the source
    other = quantize.Int8(views, str(ranges))
    other.bits = 15 - variant.bits  # the other kind of CPU: its own model, its own cache name
    assert other.tag(model) != variant.tag(model) and other.build(model, name) != written


def test_weights_take_8_bits_only_where_the_cpu_sums_int8_products_exactly(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert quantize.weight_bits(str(cpuinfo)) == 8
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx_vnni\n")
    assert quantize.weight_bits(str(cpuinfo)) == 8
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnnix\n")  # whole flags only
    assert quantize.weight_bits(str(cpuinfo)) == 7
    cpuinfo.write_text("Features\t: fp asimd\n")  # no flags line (an Arm CPU's cpuinfo)
    assert quantize.weight_bits(str(cpuinfo)) == 7
    assert quantize.weight_bits(str(tmp_path / "absent")) == 7
    with pytest.raises(InputError, match="7 or 8 bits, not 6"):
        quantize.quantize(b"", [np.zeros((1, 2, 2, 3), np.float32)], "x", bits=6)


def test_int8_is_refused_for_a_built_in_model_it_would_change_too_much(stage_one, photo_dir,
                                                                         monkeypatch):
    from rankiqa.weights import builtin, restore

    for m in builtin.BUILTIN.values():  # what `rankiqa models` says is what is offered
        assert m.int8.startswith("not offered") == (quantize.ranges_file(m.name) is None)
    quantize.check_int8(None)  # the default ships its ranges
    quantize.check_int8("biq2021-efficientnet-lite2")
    quantize.check_int8(stage_one)  # a model of your own: always
    monkeypatch.setattr(restore, "open_model", lambda *a: pytest.fail("loaded before refusing"))
    result = CliRunner().invoke(main, ["predict", photo_dir, "--engine", "onnx-int8",
                                       "--model", "biq2021-efficientnet-dinov2-ranked"])
    assert result.exit_code == 1, result.output  # an error of the input, as every one
    assert "biq2021-efficientnet-dinov2-ranked: not offered in int8: its vision" in result.output
    assert "--engine onnx, or in int8 one of biq2021-efficientnet-lite2-ranked, " in result.output
