import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from rankiqa import nets
from rankiqa.serve import engines, scoring
from rankiqa.weights import restore
from rankiqa.cli import main
from rankiqa.compat import tf
from rankiqa.errors import InputError


@pytest.fixture(scope="module")
def crops(rng=None):
    return np.random.default_rng(7).uniform(0, 255, size=(5, 32, 32, 3)).astype(np.float32)


def checkpoint_scores(checkpoint, crops):
    with scoring.load_scorer(checkpoint) as scorer:
        return scorer.score_batch(crops)


def pb_scores(pb, crops):
    """Scores of a frozen .pb, imported into a graph of its own."""
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(pb, "rb").read())
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        tf.import_graph_def(graph_def, name="")
        return sess.run("rankiqa/score:0", {"rankiqa/images:0": crops})


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_npz_round_trip_gives_identical_scores(stage_one, crops, tmp_path):
    out = tmp_path / "weights.npz"
    result = invoke("export-npy", "--model", stage_one, "--output", out)
    assert result.exit_code == 0, result.output
    arrays = restore.load_arrays(str(out))
    assert "resnet_v2/logits/weights" in arrays
    assert not any("Adam" in n or "global_step" in n for n in arrays)  # model variables only
    with tf.Graph().as_default(), tf.Session() as sess:
        images, score, _ = scoring.build_scoring_graph("resnet_v2_tiny")
        sess.run(tf.global_variables_initializer())
        report = restore.load_into(sess, arrays)
        assert not report.missing and not report.shape_mismatch and not report.unused
        from_file = sess.run(score, {images: crops})
    np.testing.assert_array_equal(from_file, checkpoint_scores(stage_one, crops))


def test_weights_carry_what_scoring_them_needs(stage_one, finetuned_dmos, tmp_path):
    """export-npy writes OUT.preprocess.json too: the network, the views, and what its raw
    output means (a fine-tuned model's labels' scale beside it)."""
    for name, model in (("rank", stage_one), ("dmos", finetuned_dmos)):
        out = tmp_path / f"{name}.npz"
        assert invoke("export-npy", "--model", model, "--output", out).exit_code == 0
        spec = json.load(open(f"{out}.preprocess.json"))
        info = json.load(open(os.path.join(model, "rankiqa.json")))
        assert spec["network"] == "resnet_v2_tiny" and spec["views"] == {**info["views"],
                                                                          "seed": 0}
        assert f"--model {out} --net resnet_v2_tiny" in spec["load"]
    assert (spec["score_range"], spec["higher_is_better"]) == ([0.0, 1.0], True)
    assert spec["labels_scale"] == {"score_scale": "the labels' scale, [0, 100] (csv), lower is "
                                    "better", "score_range": [0.0, 100.0],
                                    "higher_is_better": False}
    # an earlier export and its spec are replaced only with --force
    result = invoke("export-npy", "--model", stage_one, "--output", tmp_path / "dmos.npz")
    assert result.exit_code == 1 and "--force" in result.stderr


def test_npy_dict_form_and_scope_filters(stage_one, tmp_path):
    out = tmp_path / "head.npy"
    result = invoke("export-npy", "--model", stage_one, "--output", out, "--format", "npy", "--include",
                    "resnet_v2/logits")
    assert result.exit_code == 0, result.output
    loaded = np.load(out, allow_pickle=True).item()
    assert sorted(loaded) == ["resnet_v2/logits/biases", "resnet_v2/logits/weights"]
    result = invoke("export-npy", "--model", stage_one, "--output", tmp_path / "x.npz", "--include", "nothing/here")
    assert result.exit_code == 1 and "no variable left" in result.stderr
    assert not (tmp_path / "x.npz").exists()


def test_init_report_names_mismatches(tmp_path):
    with tf.Graph().as_default(), tf.Session() as sess:
        a = tf.Variable(np.zeros(3, np.float32), name="a")
        tf.Variable(np.zeros(2, np.float32), name="b")
        sess.run(tf.global_variables_initializer())
        report = restore.load_into(sess, {"a": np.ones(3, np.float32),
                                          "b": np.ones(4, np.float32), "c": np.ones(1)})
        assert report.restored == [("a", "a")] and report.unused == ["c"]
        assert report.shape_mismatch == [("b", (2,), (4,))]
        np.testing.assert_array_equal(sess.run(a), np.ones(3))


FRESH_PB_CHECK = textwrap.dedent('''
    import sys, numpy as np, tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    pb, crops, ckpt = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(pb, "rb").read())
    with tf.Graph().as_default() as g:
        tf.import_graph_def(graph_def, name="")
        with tf.Session() as sess:
            scores = sess.run("rankiqa/score:0", {"rankiqa/images:0": crops})
            weights = sess.run(g.get_tensor_by_name("resnet_v2/conv1/weights:0"))
    assert "rankiqa" not in sys.modules
    np.save(sys.argv[4], scores)
    np.testing.assert_array_equal(weights, tf.train.load_variable(ckpt, "resnet_v2/conv1/weights"))
    print("ok")
''')


def test_frozen_pb_in_a_fresh_tensorflow_only_process(stage_one, crops, tmp_path):
    pb = tmp_path / "model.pb"
    result = invoke("export-pb", "--model", stage_one, "--output", pb)
    assert result.exit_code == 0, result.output
    assert "rankiqa/images:0" in result.stdout and "rankiqa/score:0" in result.stdout
    np.save(tmp_path / "crops.npy", crops)
    script = tmp_path / "check.py"
    script.write_text(FRESH_PB_CHECK)
    out = subprocess.run([sys.executable, str(script), str(pb), str(tmp_path / "crops.npy"),
                          stage_one, str(tmp_path / "scores.npy")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"),
                               checkpoint_scores(stage_one, crops), rtol=1e-5, atol=1e-6)


FRESH_SAVEDMODEL_CHECK = textwrap.dedent('''
    import sys, numpy as np, tensorflow as tf
    assert tf.executing_eagerly()
    model = tf.saved_model.load(sys.argv[1])
    serve = model.signatures["serving_default"]
    np.save(sys.argv[3], serve(images=tf.constant(np.load(sys.argv[2])))["score"].numpy())
    print("ok")
''')


def test_savedmodel_loads_in_eager_tf2(stage_one, crops, tmp_path):
    out_dir = tmp_path / "saved"
    result = invoke("export-savedmodel", "--model", stage_one, "--output-dir", out_dir)
    assert result.exit_code == 0, result.output
    assert invoke("export-savedmodel", "--model", stage_one, "--output-dir", out_dir).exit_code == 1  # no --force
    np.save(tmp_path / "crops.npy", crops)
    script = tmp_path / "check.py"
    script.write_text(FRESH_SAVEDMODEL_CHECK)
    out = subprocess.run([sys.executable, str(script), str(out_dir), str(tmp_path / "crops.npy"),
                          str(tmp_path / "scores.npy")], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"),
                               checkpoint_scores(stage_one, crops), rtol=1e-5, atol=1e-6)


def save_tiny_model(path, seed):
    """A plain tf.train.Saver checkpoint of a tiny scoring network."""
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.set_random_seed(seed)
        scoring.build_scoring_graph("resnet_v2_tiny")
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, str(path / "model.ckpt"))
    return str(path)


def test_merge_two_models_into_one_graph(tmp_path, crops):
    """The seed's use case: model 1's output feeds model 2, both restored by one Saver."""
    one = save_tiny_model(tmp_path / "one", 1)
    two = save_tiny_model(tmp_path / "two", 2)
    result = invoke("merge-ckpt", one, two, "--output-dir", tmp_path / "merged",
                    "--prefix", f"{one}=model1/", "--prefix", f"{two}=model2/")
    assert result.exit_code == 0, result.output

    network_fn = nets.get_network_fn("resnet_v2_tiny")

    def chain(images):
        with tf.variable_scope("model1"):
            s1, _ = network_fn(network_fn.preprocess(images), is_training=False)
        # model 1's score scales model 2's input
        with tf.variable_scope("model2"):
            s2, _ = network_fn(network_fn.preprocess(images * tf.sigmoid(s1)[:, None, None, None]),
                               is_training=False)
        return s1, s2

    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.constant(crops)
        s1, s2 = chain(images)
        tf.train.Saver().restore(sess, tf.train.latest_checkpoint(str(tmp_path / "merged")))
        merged_1, merged_2 = sess.run([s1, s2])

    separate_1 = checkpoint_scores_plain(one, crops)
    gate = (1 / (1 + np.exp(-separate_1)))[:, None, None, None]
    separate_2 = checkpoint_scores_plain(two, crops * gate)
    np.testing.assert_allclose(merged_1, separate_1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(merged_2, separate_2, rtol=1e-4, atol=1e-5)


def checkpoint_scores_plain(ckpt_dir, crops):
    with scoring.load_scorer(ckpt_dir, net="resnet_v2_tiny") as scorer:
        return scorer.score_batch(crops.astype(np.float32))


def test_merge_clash_lists_every_clash_and_writes_nothing(tmp_path):
    one = save_tiny_model(tmp_path / "one", 1)
    two = save_tiny_model(tmp_path / "two", 2)
    result = invoke("merge-ckpt", one, two, "--output-dir", tmp_path / "merged")
    assert result.exit_code == 1
    assert "names clash" in result.stderr and "resnet_v2/conv1/weights (in" in result.stderr
    differing = [n for n, _ in tf.train.list_variables(one)
                 if not np.array_equal(tf.train.load_variable(one, n), tf.train.load_variable(two, n))]
    assert 0 < len(differing) < len(tf.train.list_variables(one))  # batch-norm inits agree
    assert f"{len(differing)} names clash" in result.stderr
    assert all(f"{n} (in" in result.stderr for n in differing)
    assert not (tmp_path / "merged").exists()
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]
    # identical values are no clash; --prefer settles real ones
    assert invoke("merge-ckpt", one, one, "--output-dir", tmp_path / "same").exit_code == 0
    result = invoke("merge-ckpt", one, two, "--output-dir", tmp_path / "pref", "--prefer", two)
    assert result.exit_code == 0, result.output
    w = "resnet_v2/conv1/weights"
    np.testing.assert_array_equal(tf.train.load_variable(str(tmp_path / "pref"), w),
                                  tf.train.load_variable(two, w))
    assert invoke("merge-ckpt", one, "--output-dir", tmp_path / "pref").exit_code == 1  # exists


def test_inspect_lists_tensors_and_values(stage_one):
    result = invoke("inspect-ckpt", stage_one, "--tensor", "resnet_v2/logits/biases")
    assert result.exit_code == 0, result.output
    assert "resnet_v2/logits/weights\t[1, 1, 64, 1]\tfloat32\t64" in result.stdout
    assert "global_step" in result.stdout and "values" in result.stdout
    result = invoke("inspect-ckpt", stage_one, "--tensor", "resnet_v2/nope")
    assert result.exit_code == 1 and "has no tensor" in result.stderr


def test_a_fifo_named_as_a_checkpoint_is_refused_not_read(stage_one, tmp_path):
    data = next(n for n in os.listdir(stage_one) if ".data-" in n)
    (tmp_path / "ck").mkdir()
    os.mkfifo(tmp_path / "ck" / "fifo.index")  # reading it would block forever
    shutil.copy(os.path.join(stage_one, data),
                tmp_path / "ck" / ("fifo" + data[data.index(".data-"):]))
    for args in (("inspect-ckpt", tmp_path / "ck" / "fifo"),
                 ("merge-ckpt", tmp_path / "ck" / "fifo", "--output-dir", tmp_path / "m")):
        result = invoke(*args)
        assert result.exit_code == 1 and "fifo.index is not a regular file" in result.stderr
    run = tmp_path / "run"  # one among a run's checkpoints is passed over
    shutil.copytree(stage_one, run)
    os.mkfifo(run / "model.ckpt-99.index")
    assert invoke("inspect-ckpt", run).exit_code == 0


def test_onnx_export_matches_tensorflow(stage_one, crops, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    out = tmp_path / "model.onnx"
    result = invoke("export-onnx", "--model", stage_one, "--output", out)
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["rankiqa/images:0"]
    (scores,) = session.run(["rankiqa/score:0"], {"rankiqa/images:0": crops})
    # float32 kernels round differently: compare relatively
    np.testing.assert_allclose(scores, checkpoint_scores(stage_one, crops), rtol=1e-3, atol=1e-4)


def test_predict_with_the_onnx_engine_scores_as_tensorflow(stage_one, photo_dir, tmp_path,
                                                           monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from rankiqa.serve import predict

    onnx_cache = tmp_path / "onnx_cache"  # this test's alone: others convert models too
    monkeypatch.setenv(engines.ONNX_CACHE_ENV, str(onnx_cache))
    outputs = {}
    for engine in ("tensorflow", "onnx"):
        result = invoke("predict", photo_dir, "--model", stage_one, "--engine", engine,
                        "--format", "json", "--batch-size", "4")
        assert result.exit_code == 0, result.output
        outputs[engine] = json.loads(result.stdout)
    tf_rows, onnx_rows = outputs["tensorflow"]["scores"], outputs["onnx"]["scores"]
    assert [r["path"] for r in onnx_rows] == [r["path"] for r in tf_rows] and len(tf_rows) > 4
    # the same views, the same network; float32 kernels round differently
    np.testing.assert_allclose([r["score"] for r in onnx_rows], [r["score"] for r in tf_rows],
                               rtol=1e-4, atol=1e-5)
    with predict.load_model(stage_one, engine="onnx") as model:
        assert model.scorer.model.engine == "onnx" and model.scorer.onnx is not None
        assert model.scorer.session is None  # TF let go
        with pytest.raises(InputError, match="the onnx engine computes scores only"):
            model.scorer.run(model.scorer.features, np.zeros((1, 8, 8, 3), np.float32))
    result = invoke("predict", photo_dir, "--model", stage_one, "--engine", "onnx",
                    "--precision", "mixed")
    assert result.exit_code == 1 and "use --engine tensorflow" in result.stderr
    check_onnx_cache(stage_one, photo_dir, onnx_cache, monkeypatch)
    # without the onnx extra: one line naming it, before the model is loaded
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: (
        (_ for _ in ()).throw(ImportError(name=name)) if name == "tf2onnx" else real(name, *a)))
    result = invoke("predict", photo_dir, "--model", stage_one, "--engine", "onnx")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: ONNX needs tf2onnx: pip install 'rankiqa[onnx]' "
                                     "(tf2onnx>=1.17 and onnxruntime)")


def planted_onnx_model():
    """A valid ONNX model with the scoring graph's input and output names that scores every
    crop by its mean pixel: what someone could plant in a shared cache."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["rankiqa/images:0"], ["rankiqa/score:0"],
                          axes=[1, 2, 3], keepdims=0)], "planted",
        [helper.make_tensor_value_info("rankiqa/images:0", TensorProto.FLOAT,
                                       [None, None, None, 3])],
        [helper.make_tensor_value_info("rankiqa/score:0", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_onnx_cache(stage_one, photo_dir, folder, monkeypatch):
    """A model is converted once: later loads read the cached conversion (the converter is not
    called), a damaged cache file is converted again, and "off" leaves the cache alone."""
    from rankiqa.serve import predict
    from rankiqa.data.images import list_files

    photos, _ = list_files([photo_dir])
    cached = sorted(folder.glob("*.onnx"))
    assert len(cached) == 1  # the CLI run above converted the model and kept it
    with predict.load_model(stage_one, engine="onnx") as model:
        first = model.score(photos)
    real_convert = engines.onnx_model
    monkeypatch.setattr(engines, "onnx_model", lambda *a, **k: pytest.fail("converted again"))
    with predict.load_model(stage_one, engine="onnx") as model:
        assert model.scorer.onnx.cached == str(cached[0])
        np.testing.assert_array_equal(model.score(photos), first)
    monkeypatch.setattr(engines, "onnx_model", real_convert)
    cached[0].write_bytes(b"not a model")
    with predict.load_model(stage_one, engine="onnx") as model:
        np.testing.assert_array_equal(model.score(photos), first)
    assert cached[0].stat().st_size > 1000 and sorted(folder.glob("*")) == cached
    # a valid model planted under the cached name (a shared cache) is not served: its bytes
    # are not the ones this user recorded
    cached[0].write_bytes(planted_onnx_model())
    with predict.load_model(stage_one, engine="onnx") as model:
        np.testing.assert_array_equal(model.score(photos), first)
    assert cached[0].read_bytes() != planted_onnx_model()
    # a damaged file in a cache that cannot be written: converted in memory, and said so
    cached[0].write_bytes(b"damaged")
    with monkeypatch.context() as patch:
        patch.setattr(engines.rundir, "write_atomic", lambda *a: (_ for _ in ()).throw(
            PermissionError(30, "Read-only file system")))
        with predict.load_model(stage_one, engine="onnx") as model:
            np.testing.assert_array_equal(model.score(photos), first)
            assert model.scorer.onnx.cached is None and "converted in memory" in model.engine
    monkeypatch.setenv(engines.ONNX_CACHE_ENV, "off")
    cached[0].unlink()
    with predict.load_model(stage_one, engine="onnx") as model:
        assert model.scorer.onnx.cached is None
    assert not list(folder.glob("*"))


def test_an_export_fed_by_views_batch_scores_as_predict(stage_one, photo_dir, tmp_path):
    """The README's snippet: the model's views from rankiqa.json, `Views.batch`, the mean of
    each image's views."""
    from rankiqa.run import rundir
    from rankiqa.serve import predict
    from rankiqa.data.images import list_files
    from rankiqa.preprocessing.views import Views

    result = invoke("export-pb", "--model", stage_one, "--output", tmp_path / "m.pb")
    assert result.exit_code == 0 and result.stdout.startswith(f"{tmp_path / 'm.pb'}: input ")
    views = Views(**rundir.read_run_info(stage_one)["views"])
    paths = list_files([photo_dir])[0][:3]
    graph_def = tf.GraphDef()
    graph_def.ParseFromString((tmp_path / "m.pb").read_bytes())
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.import_graph_def(graph_def, name="")
        scores = sess.run("rankiqa/score:0", {"rankiqa/images:0": views.batch(paths)})
    rows, _, used = predict.predict(paths, stage_one, device="cpu")
    assert used.views == views and views.mode == "centre_random"  # random views: seeds matter
    np.testing.assert_allclose(scores.reshape(len(paths), views.count).mean(axis=1),
                               [r["score"] for r in rows], rtol=1e-5, atol=1e-6)


def test_predict_from_exported_weights_equals_checkpoint(stage_one, photo_dir, tmp_path):
    weights_file = tmp_path / "w.npz"
    assert invoke("export-npy", "--model", stage_one, "--output", weights_file).exit_code == 0
    from_ckpt = invoke("predict", photo_dir, "--model", stage_one)
    # the model's views (48, 2 centre_random, from rankiqa.json) given explicitly
    from_npz = invoke("predict", photo_dir, "--model", weights_file, "--net", "resnet_v2_tiny",
                      "--crop-size", 48, "--crops", 2, "--crop-mode", "centre_random")
    assert from_ckpt.exit_code == 0 and from_npz.exit_code == 0, from_npz.output
    def scores(result):  # path and score: the model column differs
        return [line.split(",")[:2] for line in result.stdout.splitlines()]

    assert scores(from_ckpt) == scores(from_npz)
    assert "(2 centre_random views of 48² each)" in from_ckpt.stderr
    default = invoke("predict", photo_dir, "--model", weights_file, "--net", "resnet_v2_tiny")
    assert "(1 grid views of 64² each)" in default.stderr  # no rankiqa.json: the net's default
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{"resnet_v2/conv1/weights": np.zeros((1, 1, 1, 1), np.float32)})
    result = invoke("predict", photo_dir, "--model", wrong, "--net", "resnet_v2_tiny")
    assert result.exit_code == 1 and "does not fit resnet_v2_tiny" in result.stderr


def test_predict_reads_a_pickle_only_when_allowed(stage_one, photo_dir, tmp_path):
    pickled = tmp_path / "w.npy"
    assert invoke("export-npy", "--model", stage_one, "--output", pickled, "--format", "npy").exit_code == 0
    result = invoke("predict", photo_dir, "--model", pickled, "--net", "resnet_v2_tiny")
    assert result.exit_code == 1 and "holds a pickle" in result.stderr
    assert "--allow-pickle" in result.stderr and "Traceback" not in result.output
    result = invoke("predict", photo_dir, "--model", pickled, "--net", "resnet_v2_tiny",
                    "--allow-pickle")
    assert result.exit_code == 0, result.output


def test_tools_on_finetune_and_foreign_checkpoints(stage_one, finetuned, crops, tmp_path):
    assert invoke("export-pb", "--model", finetuned, "--output", tmp_path / "ft.pb").exit_code == 0
    assert invoke("export-npy", "--model", finetuned, "--output", tmp_path / "ft.npz").exit_code == 0
    assert invoke("inspect-ckpt", finetuned).exit_code == 0
    # the exports score as the fine-tuned run does: the .npz the same graph, to the bit; the
    # frozen graph to float32 rounding (TensorFlow folds its constants into other kernels: 2e-6
    # apart on AMD EPYC without AVX-512)
    expected = checkpoint_scores(finetuned, crops)
    np.testing.assert_allclose(pb_scores(tmp_path / "ft.pb", crops), expected, rtol=1e-5,
                               atol=1e-5)
    with scoring.load_scorer(str(tmp_path / "ft.npz"), net="resnet_v2_tiny") as scorer:
        np.testing.assert_array_equal(scorer.score_batch(crops), expected)
    foreign = tmp_path / "foreign"
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.Variable(np.arange(6, dtype=np.int64).reshape(2, 3), name="other/table")
        tf.Variable(np.float64(2.5), name="other/scale")
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, str(foreign / "model.ckpt"))
    assert invoke("export-npy", "--model", foreign, "--output", tmp_path / "f.npz").exit_code == 0
    arrays = restore.load_arrays(str(tmp_path / "f.npz"))
    assert arrays["other/table"].dtype == np.int64 and arrays["other/scale"] == 2.5
    result = invoke("inspect-ckpt", foreign)
    assert "other/table\t[2, 3]\tint64\t6" in result.stdout
    result = invoke("merge-ckpt", foreign, stage_one, "--output-dir", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert tf.train.load_variable(str(tmp_path / "m"), "other/scale") == 2.5


def test_outputs_are_never_inputs_and_files_need_force(stage_one, tmp_path):
    for args in (("merge-ckpt", stage_one, "--output", stage_one, "--force"),
                 ("export-savedmodel", stage_one, stage_one, "--force"),
                 ("export-npy", stage_one, os.path.join(stage_one, "w.npz"), "--force")):
        result = invoke(*args)
        assert result.exit_code == 1 and "is, holds or lies inside the input" in result.stderr
    assert os.path.isfile(os.path.join(stage_one, "rankiqa.json"))
    for command, out in (("export-npy", tmp_path / "w.npz"), ("export-pb", tmp_path / "m.pb")):
        assert invoke(command, stage_one, out).exit_code == 0
        first = out.read_bytes()
        result = invoke(command, stage_one, out)
        assert result.exit_code == 1 and "already exists; pass --force" in result.stderr
        assert out.read_bytes() == first
        assert invoke(command, stage_one, out, "--force").exit_code == 0


def test_merge_one_checkpoint_under_two_scopes(tmp_path):
    one = save_tiny_model(tmp_path / "one", 1)
    result = invoke("merge-ckpt", one, one, "--output-dir", tmp_path / "m",
                    "--prefix", f"{one}=model1/", "--prefix", f"{one}=model2/")
    assert result.exit_code == 0, result.output
    names = [n for n, _ in tf.train.list_variables(str(tmp_path / "m"))]
    count = len(tf.train.list_variables(one))
    assert len(names) == 2 * count
    assert f"{count} variables from {one} as model1/" in result.stderr
    assert f"{count} variables from {one} as model2/" in result.stderr
    result = invoke("merge-ckpt", one, one, "--output-dir", tmp_path / "m2", "--prefix",
                    f"{one}=model1/")
    assert result.exit_code == 1 and "is given 2 times with 1 --prefix" in result.stderr


def test_auto_engine_measures_once_and_takes_the_faster_where_scores_agree(
        stage_one, photo_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(engines.ONNX_CACHE_ENV, str(tmp_path / "cache"))  # this test's alone
    # the tiny net's batches take milliseconds: on a busy machine its rounds are seldom steady
    # enough to keep (`test_auto_engine_decides_by_best_rounds_and_keeps_only_steady_verdicts`)
    monkeypatch.setattr(engines, "STEADY", 1e9)
    with scoring.load_scorer(stage_one, engine="auto") as scorer:
        chosen, note = scorer.model.engine, scorer.model.engine_note
    (path,) = [str(p) for p in (tmp_path / "cache").glob("*.engine.json")]
    record = json.load(open(path))
    faster = "onnx" if record["onnx_views_s"] > record["tensorflow_views_s"] else "tensorflow"
    expected = faster if record["agree"] else "tensorflow"
    assert record["agree"] and record["max_difference"] <= 1e-5  # the tiny net: they agree
    assert chosen == expected and (scorer.onnx is not None) == (expected == "onnx")
    assert note.startswith(f"auto: {expected} (onnx runs ")
    # measured once: the next load reads the record
    monkeypatch.setattr(engines, "_measure_engines",
                        lambda *args, **kwargs: pytest.fail("measured again"))
    with scoring.load_scorer(stage_one, engine="auto") as scorer:
        assert scorer.model.engine == chosen
    # where the scores do not agree, TensorFlow, however fast ONNX Runtime is
    json.dump({**record, "agree": False, "onnx_views_s": 1e9}, open(path, "w"))
    result = invoke("predict", photo_dir, "--model", stage_one)
    assert result.exit_code == 0, result.output
    assert "engine tensorflow (auto: tensorflow (onnx scores differ by up to" in result.stderr
    json.dump({**record, "agree": True, "onnx_views_s": 1e9}, open(path, "w"))
    result = invoke("predict", photo_dir, "--model", stage_one)
    assert "engine onnx (auto: onnx (onnx runs" in result.stderr
    # a record of another shape (a shared cache, another version) is measured again
    measured = []
    monkeypatch.setattr(engines, "_measure_engines",
                        lambda *args, **kwargs: measured.append(1) or record)
    for bad in ([], {k: v for k, v in record.items() if k != "agree"},
                {**record, "tensorflow_views_s": 0}, {**record, "onnx_views_s": "fast"},
                {**record, "agree": False, "max_difference": "big"},
                {**record, "method": 1}):  # a verdict of the earlier method: measured again
        json.dump(bad, open(path, "w"))
        result = invoke("predict", photo_dir, "--model", stage_one)
        assert result.exit_code == 0, result.output
        # the silent seconds of a measurement are announced, with where it is kept
        assert f"first use of this model here: converting it to ONNX and timing both " \
            f"engines, once (up to a minute); kept in {tmp_path / 'cache'} (" in result.stderr
    assert len(measured) == 6


def test_merge_into_a_relative_folder_and_of_garbage(tmp_path, monkeypatch):
    one = save_tiny_model(tmp_path / "one", 1)
    monkeypatch.chdir(tmp_path)
    result = invoke("merge-ckpt", one, "--output-dir", os.path.join("out", "merged"))
    assert result.exit_code == 0, result.output
    merged = tmp_path / "out" / "merged"
    assert '"model.ckpt"' in (merged / "checkpoint").read_text()  # not ../../model.ckpt
    assert restore.resolve_checkpoint(os.path.join("out", "merged")).endswith("model.ckpt")
    assert len(tf.train.list_variables(str(merged))) == len(tf.train.list_variables(one))
    (tmp_path / "garbage").write_bytes(b"\0" * 100)
    result = invoke("merge-ckpt", tmp_path / "garbage", one, "--output-dir", tmp_path / "g")
    assert result.exit_code == 1 and not (tmp_path / "g").exists()
    assert f"error: cannot read checkpoint {tmp_path / 'garbage'}" in result.stderr
    result = invoke("merge-ckpt", one, "--output-dir", tmp_path / "one", "--force")
    assert "--output-dir" in result.stderr and "is, holds or lies inside the input" in result.stderr


SERVE_WITHOUT_RANKIQA = textwrap.dedent('''
    import json, sys
    import numpy as np
    import preprocess  # the copied file alone: NumPy and Pillow
    folder, photos = sys.argv[1], sys.argv[2:]
    out = {}
    spec = preprocess.load_spec(f"{folder}/model.onnx.preprocess.json", f"{folder}/model.onnx")
    batch = preprocess.batch(photos, spec)
    import onnxruntime
    session = onnxruntime.InferenceSession(f"{folder}/model.onnx",
                                           providers=["CPUExecutionProvider"])
    out["onnx"] = preprocess.per_image(session.run([spec["output"]["name"]],
                                                   {spec["input"]["name"]: batch})[0], spec)
    import tensorflow as tf
    saved = json.load(open(f"{folder}/saved/preprocess.json"))
    serve = tf.saved_model.load(f"{folder}/saved").signatures["serving_default"]
    out["savedmodel"] = preprocess.per_image(
        serve(images=tf.constant(preprocess.batch(photos, saved)))["score"].numpy(), saved)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(open(f"{folder}/model.pb", "rb").read())
    with tf.Graph().as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session() as sess:
            out["pb"] = preprocess.per_image(sess.run(spec["output"]["name"],
                                                      {spec["input"]["name"]: batch}), spec)
    assert "rankiqa" not in sys.modules
    print(json.dumps({k: v.tolist() for k, v in out.items()}))
''')


# random views; pyramid views; scores on the labels' own scale (DMOS 0-100, lower better)
@pytest.mark.parametrize("run", ["stage_one", "finetuned", "finetuned_dmos"])
def test_every_export_served_without_rankiqa_scores_as_predict(run, request, photo_dir,
                                                               tmp_path):
    pytest.importorskip("onnxruntime")
    from rankiqa.preprocessing import preprocess
    model = request.getfixturevalue(run)
    for command, out in (("export-onnx", "--output"), ("export-pb", "--output"),
                         ("export-savedmodel", "--output-dir")):
        target = tmp_path / {"export-onnx": "model.onnx", "export-pb": "model.pb",
                             "export-savedmodel": "saved"}[command]
        result = invoke(command, "--model", model, out, target)
        assert result.exit_code == 0, result.output
    def content(path):  # the spec but for the file it sits beside (a SavedModel holds it)
        return {k: v for k, v in json.load(open(path)).items() if k != "model_sha256"}

    spec = content(tmp_path / "model.onnx.preprocess.json")
    assert content(tmp_path / "model.pb.preprocess.json") == spec
    assert spec["views"] == {**json.load(open(os.path.join(model, "rankiqa.json")))["views"],
                             "seed": 0}
    assert content(tmp_path / "saved" / "preprocess.json") == spec
    # what the scores mean travels with them
    assert (spec["score_range"], spec["higher_is_better"]) == {
        "stage_one": (None, True), "finetuned": ([0.0, 1.0], True),
        "finetuned_dmos": ([0.0, 100.0], False)}[run]
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "preprocess.py").write_text(open(preprocess.__file__).read())
    (serving / "serve.py").write_text(SERVE_WITHOUT_RANKIQA)
    photos = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))[:6]
    Image.open(photos[0]).convert("RGB").resize((20, 30)).save(tmp_path / "small.png")
    photos.append(str(tmp_path / "small.png"))  # upscaled first, bicubic
    served = subprocess.run([sys.executable, str(serving / "serve.py"), str(tmp_path), *photos],
                            capture_output=True, text=True, timeout=300, cwd=serving)
    assert served.returncode == 0, served.stderr[-2000:]
    result = invoke("predict", *photos, "--model", model, "--engine", "tensorflow",
                    "--format", "json")
    assert result.exit_code == 0, result.output
    expected = [r["score"] for r in json.loads(result.stdout)["scores"]]
    span = spec["score_range"][1] - spec["score_range"][0] if spec["score_range"] else 1.0
    for kind, scores in json.loads(served.stdout).items():  # 1e-5 of the normalised scale
        np.testing.assert_allclose(scores, expected, atol=1e-5 * span, err_msg=kind)


def test_a_model_and_a_spec_that_do_not_belong_together_are_told_apart(stage_one, tmp_path):
    from rankiqa.preprocessing import preprocess

    out = tmp_path / "pair.pb"
    assert invoke("export-pb", "--model", stage_one, "--output", out).exit_code == 0
    spec_path = str(out) + ".preprocess.json"
    assert preprocess.load_spec(spec_path, out)["model_sha256"]
    good = out.read_bytes()
    out.write_bytes(good[:-10])  # another model's file renamed in, its spec not (a cut export)
    with pytest.raises(preprocess.NotItsModel, match="pair.pb.preprocess.json does not describe"):
        preprocess.load_spec(spec_path, out)
    result = invoke("export-pb", "--model", stage_one, "--output", out)
    assert result.exit_code == 1 and "describes another model (an export cut short?); pass " \
        "--force to write both again" in result.stderr and "--output " in result.stderr
    os.remove(spec_path)
    result = invoke("export-pb", "--model", stage_one, "--output", out)
    assert result.exit_code == 1 and "is missing or damaged" in result.stderr
    assert invoke("export-pb", "--model", stage_one, "--output", out, "--force").exit_code == 0
    assert preprocess.load_spec(spec_path, out)  # the pair belongs together again
    result = invoke("export-pb", "--model", stage_one, "--output", out)
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr


def test_the_served_preprocessing_bounds_upscaling():
    from PIL import Image

    from rankiqa.preprocessing import preprocess

    strip = Image.new("RGB", (200_000, 4))  # 96 / 4 = 24x up: 4.8 million x 96 pixels
    spec = {"views": {"crop": 96, "count": 1, "mode": "grid", "seed": 0}}
    with pytest.raises(preprocess.TooLarge, match="over the limit of"):
        preprocess.batch([strip], spec)
    assert preprocess.batch([Image.new("RGB", (40, 30))], spec).shape == (1, 96, 96, 3)


def test_auto_engine_decides_by_best_rounds_and_keeps_only_steady_verdicts(
        stage_one, photo_dir, tmp_path, monkeypatch):
    def rounds(tensorflow, onnx):
        """A fake `one_round` replaying these seconds per round."""
        feed = {"tensorflow": iter(tensorflow), "onnx": iter(onnx)}
        return lambda order: {name: next(feed[name]) for name in order}

    # ONNX Runtime twice as fast, but a competing load slowed two of its first three rounds:
    # their median says TensorFlow; the best rounds, once steady, say ONNX Runtime
    verdict = engines.decide(rounds([1.0] * 9, [0.5, 1.4, 1.4, 0.52, 0.5] + [0.5] * 4), 64)
    assert verdict["onnx_views_s"] / verdict["tensorflow_views_s"] == pytest.approx(2.0)
    assert verdict["trusted"] and verdict["rounds"] == 5  # three best rounds alike
    # a clear and steady verdict stops at three rounds; a close one takes all nine
    assert engines.decide(rounds([1.0] * 9, [0.5] * 9), 64)["rounds"] == 3
    close = engines.decide(rounds([1.0] * 9, [0.95] * 9), 64)
    assert close["rounds"] == engines.MOST_ROUNDS and close["trusted"]
    # never steady (a load coming and going): a verdict for now, not kept
    noisy = engines.decide(rounds([1.3 ** k for k in range(9)],
                                  [0.5 * 1.3 ** -k for k in range(9)]), 64)
    assert not noisy["trusted"]
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(engines.ONNX_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(engines, "decide", lambda one_round, views: {
        "tensorflow_views_s": 10.0, "onnx_views_s": 20.0, "rounds": 9, "trusted": False})
    result = invoke("predict", photo_dir, "--model", stage_one)
    assert result.exit_code == 0, result.output
    assert "not kept: the machine was too busy to tell, measured again next time" in result.stderr
    assert not list((tmp_path / "cache").glob("*.engine.json"))


def test_auto_engine_under_a_synthetic_competing_load_never_keeps_the_slower():
    """A load that slows a random half of the runs by 30-200 % (seeded: the same every run):
    ONNX Runtime is 1.4x faster when quiet. Every verdict kept must name it, and at least 95 %
    of the verdicts used must."""
    rng = np.random.default_rng(2026)
    quiet = {"tensorflow": 1.0, "onnx": 1.0 / 1.4}

    def loaded_round(order):
        return {name: quiet[name] * (1 + (rng.uniform(0.3, 2.0) if rng.random() < 0.5 else 0))
                for name in order}

    verdicts = [engines.decide(loaded_round, 64) for _ in range(200)]
    onnx_faster = [v["onnx_views_s"] > v["tensorflow_views_s"] for v in verdicts]
    assert all(fast for fast, v in zip(onnx_faster, verdicts) if v["trusted"])
    assert sum(onnx_faster) >= 0.95 * len(verdicts)
    assert sum(v["trusted"] for v in verdicts) >= 0.5 * len(verdicts)  # most are kept
