import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats

from rankiqa.cli import main


@pytest.fixture
def mixed_folder(tmp_path, photo_dir):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    photo = Image.open(os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])).convert("RGB")
    photo.save(folder / "a.bmp")
    photo.resize((40, 30)).save(folder / "b.png")  # smaller than the crop: upscaled, not refused
    photo.save(folder / "sub" / "c.jpg", quality=90)
    data = (folder / "sub" / "c.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image")  # named as an image: tried, reported
    (folder / "labels.csv").write_text("path,score\na.bmp,0.5\n")  # named as data: left out
    return folder


def test_predict_scores_images_and_reports_the_rest(stage_one, mixed_folder):
    result = CliRunner().invoke(main, ["predict", str(mixed_folder), "--model", stage_one,
                                       "--format", "json", "--crops", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # --crops given; side and placement are the model's own (rankiqa.json)
    assert out["views"] == {"crop": 48, "count": 2, "mode": "centre_random"}
    scored = sorted(os.path.relpath(r["path"], mixed_folder) for r in out["scores"])
    assert scored == ["a.bmp", "b.png", os.path.join("sub", "c.jpg")]
    assert all(np.isfinite(r["score"]) for r in out["scores"])
    skipped = " ".join(out["skipped"])
    assert "truncated.jpg" in skipped and "notes.jpg" in skipped and len(out["skipped"]) == 2
    assert ("left out 1 file named as data, not images (labels.csv); name one to score it"
            in result.stderr)
    assert "scored 3 images (2 centre_random views of 48² each), skipped 2" in result.stderr
    assert "scored 5/5, " in result.stderr  # progress: files scored or skipped, rate


def test_predict_csv_to_file_matches_json(stage_one, mixed_folder, tmp_path):
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(main, ["predict", str(mixed_folder / "a.bmp"),
                                       str(mixed_folder / "sub"), "--model", stage_one,
                                       "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out)))
    assert [os.path.basename(r["path"]) for r in rows] == ["a.bmp", "c.jpg"]
    # every row says which model, which views and what the score means
    assert {(r["model"], r["views"]) for r in rows} == {(stage_one, "2 centre_random views of 48²")}
    assert rows[0]["score_scale"] == "uncalibrated ranking score (stage one only), higher is better"


def test_evaluate_writes_summary_predictions_and_png(stage_one, label_file, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "evaluate", stage_one, "--set", f"data.label_file={label_file}", "--split", "all",
        "--crops", "3", "--output-dir", str(out), "--set", "data.crop_size=40"])
    assert result.exit_code == 0, result.output
    summary = json.load(open(out / "summary.json"))
    # no data config (a stage-one run): the model's own views (2 centre_random of 48²), with
    # --crops and --set data.crop_size on top
    assert (summary["crops"], summary["crop_size"], summary["crop_mode"]) == (3, 40,
                                                                              "centre_random")
    assert summary["precision"] == "fp32"
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    predicted = np.array([float(r["predicted"]) for r in rows])
    target = np.array([float(r["mos"]) for r in rows])
    assert summary["count"] == len(rows) == 6 * (4 * 5 + 1)
    assert summary["srocc"] == pytest.approx(stats.spearmanr(predicted, target)[0], abs=1e-5)
    assert summary["plcc"] == pytest.approx(stats.pearsonr(predicted, target)[0], abs=1e-5)
    assert summary["krocc"] == pytest.approx(stats.kendalltau(predicted, target)[0], abs=1e-5)
    assert set(summary["per_distortion"]) == {"gblur", "wn", "jpeg", "jp2k"}
    assert "per_group" not in summary and {r["group"] for r in rows} == {""}
    assert set(summary["median"]) == set(summary["mean"])  # 3 views: the median differs
    with Image.open(out / "scatter.png") as im:
        assert im.format == "PNG" and im.size == (720, 640)
        pixels = np.asarray(im.convert("RGB"), float).reshape(-1, 3)
    # one colour per distortion: tab10's first four, drawn at alpha 0.7 on white
    import matplotlib

    for k in range(4):
        colour = 0.7 * np.array(matplotlib.colormaps["tab10"](k)[:3]) * 255 + 0.3 * 255
        assert np.abs(pixels - colour).max(axis=1).min() < 8, k


def test_evaluate_and_validation_give_figures_per_group(stage_one, label_file, tmp_path):
    """A label file that names each photo's kind: figures within each kind beside the overall
    one, in evaluate's summary, line and predictions, and in training's validation."""
    rows = list(csv.DictReader(open(label_file)))
    for k, row in enumerate(rows):
        row["group"] = ["phone", "dslr"][k % 2]
    grouped = tmp_path / "grouped.csv"
    with open(grouped, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["evaluate", "--model", stage_one, "--set",
                                       f"data.label_file={grouped}", "--split", "all",
                                       "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.load(open(out / "summary.json"))
    predictions = list(csv.DictReader(open(out / "predictions.csv")))
    for name in ("phone", "dslr"):
        mine = [r for r in predictions if r["group"] == name]
        assert summary["per_group"][name]["count"] == len(mine) > 3
        assert summary["per_group"][name]["srocc"] == pytest.approx(stats.spearmanr(
            [float(r["predicted"]) for r in mine], [float(r["mos"]) for r in mine])[0], abs=1e-5)
    assert "per group: dslr srocc " in result.stdout and "phone srocc " in result.stdout
    from rankiqa.train import finetune
    from rankiqa_testkit import finetune_config

    lines = []
    finetune.train(finetune_config(str(grouped), stage_one, **{"train.max_steps": 2,
                                                                "train.eval_every": 1}),
                   str(tmp_path / "run"), device="cpu", log=lines.append)
    assert any(line.startswith("validation srocc") and "; per group: dslr srocc " in line
               for line in lines)
    history = json.load(open(tmp_path / "run" / "eval.json"))["history"]
    assert {"srocc_dslr", "srocc_phone"} <= set(history[-1])
def test_evaluate_takes_views_and_data_from_the_config_or_the_run(finetuned, tmp_path):
    run = Path(finetuned)
    # no --config: the run's own data config (label file, split, views)
    result = CliRunner().invoke(main, ["evaluate", str(run), "--output-dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "data config from" in result.stderr
    summary = json.load(open(tmp_path / "a" / "summary.json"))
    validation = json.load(open(run / "eval.json"))
    assert (summary["crops"], summary["crop_mode"], summary["crop_size"]) == (3, "pyramid", 32)
    assert summary["count"] == 4 * 5 + 1 and summary["srocc"] == pytest.approx(
        validation["srocc"], abs=1e-6)  # the same views as training's validation
    # --set on top of the recorded config
    result = CliRunner().invoke(main, ["evaluate", str(run), "--set", "data.eval_crops=1",
                                       "--output-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    one_view = json.load(open(tmp_path / "b" / "summary.json"))
    assert one_view["crops"] == 1 and "median" not in one_view  # the median of one is the mean


def test_evaluate_names_each_image_as_the_label_file_lists_it(stage_one, label_file, tmp_path):
    rows = list(csv.DictReader(open(label_file)))[:5]
    for row in rows:  # relative to the new file's folder, as a user writes them
        row["path"] = os.path.relpath(row["path"], tmp_path)
    with open(tmp_path / "relative.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = CliRunner().invoke(main, ["evaluate", "--model", stage_one, "--set",
                                       f"data.label_file={tmp_path / 'relative.csv'}",
                                       "--split", "all", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = [r["path"] for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))]
    assert written == [r["path"] for r in rows] and written[0].startswith("..")


def test_scores_come_on_the_labels_own_scale_unless_normalised(finetuned_dmos, photo_dir,
                                                               tmp_path):
    """A model fine-tuned on DMOS 0-100 (lower better) reports DMOS; --normalised gives the
    [0, 1], higher-better scores it trained on; evaluate's figures compare the latter."""
    import rankiqa

    photos = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))[:3]
    out = {}
    for flags in ((), ("--normalised",)):
        result = CliRunner().invoke(main, ["predict", *photos, "--model", finetuned_dmos,
                                           "--engine", "tensorflow", "--format", "json", *flags])
        assert result.exit_code == 0, result.output
        out[flags] = json.loads(result.stdout)
    dmos = np.array([r["score"] for r in out[()]["scores"]])
    normal = np.array([r["score"] for r in out[("--normalised",)]["scores"]])
    np.testing.assert_allclose(dmos, 100 - 100 * normal, atol=1e-3)
    assert out[()]["score_scale"] == "the labels' scale, [0, 100] (csv), lower is better"
    assert (out[()]["score_range"], out[()]["higher_is_better"]) == ([0.0, 100.0], False)
    assert (out[("--normalised",)]["score_range"], out[("--normalised",)]["higher_is_better"]) == (
        [0.0, 1.0], True)
    assert out[("--normalised",)]["score_scale"] == ("normalised MOS in [0, 1] (csv), higher is "
                                                     "better")
    with rankiqa.load_model(finetuned_dmos, engine="tensorflow") as model:
        assert model.lower_better is True and model.score_range == (0.0, 100.0)
        assert model.score(photos[0]) == pytest.approx(dmos[0], abs=1e-4)
    with rankiqa.load_model(finetuned_dmos, engine="tensorflow", normalised=True) as model:
        assert model.lower_better is False and model.score_range == (0.0, 1.0)
        assert model.score(photos[0]) == pytest.approx(normal[0], abs=1e-6)
    result = CliRunner().invoke(main, ["evaluate", "--model", finetuned_dmos, "--output-dir",
                                       str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    summary = json.load(open(tmp_path / "e" / "summary.json"))
    assert summary["predicted"] == {"score_scale": out[()]["score_scale"],
                                    "score_range": [0.0, 100.0], "higher_is_better": False}
    rows = list(csv.DictReader(open(tmp_path / "e" / "predictions.csv")))
    predicted = np.array([float(r["predicted"]) for r in rows])
    normalised = np.array([float(r["predicted_normalised"]) for r in rows])
    np.testing.assert_allclose(predicted, 100 - 100 * normalised, atol=1e-3)
    raw = np.array([float(r["mos_raw"]) for r in rows])
    np.testing.assert_allclose(raw, 100 - 100 * np.array([float(r["mos"]) for r in rows]),
                               atol=1e-3)
    # the figures: normalised against normalised, which is DMOS against DMOS
    assert summary["srocc"] == pytest.approx(stats.spearmanr(predicted, raw)[0], abs=1e-5)
    assert summary["plcc"] == pytest.approx(stats.pearsonr(predicted, raw)[0], abs=1e-5)


def test_an_undefined_correlation_is_null_in_strict_json(stage_one, photo_dir, tmp_path):
    """Tied labels leave SROCC undefined: summary.json says null, which any JSON parser reads,
    not the bare NaN only Python's accepts."""
    labels = tmp_path / "ties.csv"
    photos = sorted(os.listdir(photo_dir))
    labels.write_text("path,score\n" + "".join(f"{os.path.join(photo_dir, p)},0.5\n"
                                               for p in photos))
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "evaluate", stage_one, "--set", f"data.label_file={labels}", "--split", "all",
        "--output-dir", str(out)])
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert summary["srocc"] is None and summary["count"] == len(photos)
    assert summary["rmse"] is not None  # what is defined stays a number
