import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats

from rankiqa.cli import main
from tests.test_finetune import label_file, stage_one  # noqa: F401 (fixtures)


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
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_scores_images_and_reports_the_rest(stage_one, mixed_folder):  # noqa: F811
    result = CliRunner().invoke(main, ["predict", str(mixed_folder), "--checkpoint", stage_one,
                                       "--format", "json", "--crops", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    scored = sorted(os.path.relpath(r["path"], mixed_folder) for r in out["scores"])
    assert scored == ["a.bmp", "b.png", os.path.join("sub", "c.jpg")]
    assert all(np.isfinite(r["score"]) for r in out["scores"])
    skipped = " ".join(out["skipped"])
    assert "truncated.jpg" in skipped and "notes.txt" in skipped and len(out["skipped"]) == 2
    assert "scored 3 images, skipped 2" in result.stderr


def test_predict_csv_to_file_matches_json(stage_one, mixed_folder, tmp_path):  # noqa: F811
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(main, ["predict", str(mixed_folder / "a.bmp"),
                                       str(mixed_folder / "sub"), "--checkpoint", stage_one,
                                       "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out)))
    assert [os.path.basename(r["path"]) for r in rows] == ["a.bmp", "c.jpg"]


def test_evaluate_writes_summary_predictions_and_png(stage_one, label_file, tmp_path):  # noqa: F811
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "evaluate", stage_one, "--set", f"data.label_file={label_file}", "--split", "all",
        "--crops", "3", "--output-dir", str(out), "--set", "data.crop_size=32"])
    assert result.exit_code == 0, result.output
    summary = json.load(open(out / "summary.json"))
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    predicted = np.array([float(r["predicted"]) for r in rows])
    target = np.array([float(r["mos"]) for r in rows])
    assert summary["count"] == len(rows) == 6 * 4 * 6
    assert summary["srocc"] == pytest.approx(stats.spearmanr(predicted, target)[0], abs=1e-5)
    assert summary["plcc"] == pytest.approx(stats.pearsonr(predicted, target)[0], abs=1e-5)
    assert summary["krocc"] == pytest.approx(stats.kendalltau(predicted, target)[0], abs=1e-5)
    assert set(summary["per_distortion"]) == {"gblur", "wn", "jpeg", "jp2k"}
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / "scatter.png") as im:
        assert im.format == "PNG" and im.size == (480, 480)
