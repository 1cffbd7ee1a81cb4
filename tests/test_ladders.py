import json
import os

import numpy as np
from click.testing import CliRunner

from rankiqa import metrics
from rankiqa.serve import ladders
from rankiqa.cli import main
from rankiqa.preprocessing.views import Views


class DetailScorer:
    """Scores an image by its mean absolute horizontal gradient: blur lowers it, noise raises
    it, so a gblur ladder is ranked right and a noise ladder exactly wrong."""

    views = Views(32, 1, "grid")

    def score_items(self, images):
        return np.array([np.abs(np.diff(im.astype(float), axis=1)).mean() for im in images])


def test_ladders_run_mildest_first_per_family(photo_dir):
    paths = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))[:2]
    summary = ladders.evaluate_ladders(DetailScorer(), paths, ("gblur", "wn"), log=None)
    assert summary["families"]["gblur"] == {"pair_accuracy": 1.0, "srocc": 1.0, "ladders": 2}
    assert summary["families"]["wn"]["pair_accuracy"] == 0.0
    assert summary["pair_accuracy"] == 0.5 and summary["photos"] == 2
    assert all(len(r["scores"]) == 6 for r in summary["scores"])


def test_ladders_command_on_a_stage_one_model(stage_one, photo_dir, tmp_path):
    out = tmp_path / "ladders"
    result = CliRunner().invoke(main, ["ladders", stage_one, photo_dir, "--families", "gblur,wn",
                                       "--count", "2", "--max-side", "96",
                                       "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "ladders.json").read_text())
    assert set(summary["families"]) == {"gblur", "wn"} and summary["photos"] == 2
    accuracy = np.mean([metrics.pair_accuracy(r["scores"]) for r in summary["scores"]])
    assert f"pair accuracy {accuracy:.4f} (2 photos" in result.stdout
    # the model's own views (rankiqa.json), as predict uses
    assert summary["views"] == {"crop": 48, "count": 2, "mode": "centre_random"}


def test_ladders_refuse_unknown_families(stage_one, photo_dir, tmp_path):
    result = CliRunner().invoke(main, ["ladders", stage_one, photo_dir, "--families", "gblur,fog",
                                       "--output-dir", str(tmp_path)])
    assert result.exit_code == 1 and "unknown distortion 'fog'" in result.stderr
