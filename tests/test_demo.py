"""The main job (`rankiqa demo`), whole, with few steps: sample photos, ranking data, both
stages, the report."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from rankiqa.cli import main


def test_the_demo_runs_end_to_end_and_writes_its_report(tmp_path):
    out = tmp_path / "demo"
    quick = ["--set", "train.max_steps=4", "--set", "train.eval_every=2", "--set",
             "train.summary_every=2", "--set", "data.eval_crops=1", "--set-finetune",
             "train.max_steps=2", "--set-finetune", "data.eval_crops=1"]
    result = CliRunner().invoke(main, ["demo", "--output-dir", str(out), "--device", "cpu",
                                       *quick])
    assert result.exit_code == 0, result.output
    rank = json.load(open(out / "rank" / "eval.json"))
    groups = rank["group_scores"]
    # 3 unseen photos x 4 LIVE families, each pristine + 5 levels, every image scored
    assert len(groups) == 12 and {len(g["scores"]) for g in groups} == {6}
    assert {g["reference"] for g in groups} == set(rank["held_out_references"])
    assert [h["step"] for h in rank["history"]] == [2, 4]
    in_order = sum(all(np.diff(g["scores"]) <= 0) for g in groups)  # ties keep level order
    lines = result.stdout.splitlines()
    assert lines[0] == (f"stage one: held-out rank_accuracy {rank['rank_accuracy']:.4f} on "
                        f"photos it never saw ({in_order} of 12 distortion ladders in perfect "
                        f"order; {out / 'rank' / 'eval.json'})")
    ft = json.load(open(out / "finetune" / "eval.json"))
    # a validation part of a few dozen photos chooses no checkpoint (train.keep_best_from):
    # the model is the last step's, and so is the figure
    assert "kept" not in json.load(open(out / "finetune" / "rankiqa.json"))
    assert lines[1].startswith(f"stage two (a smoke test of the chain, not a quality figure): "
                               f"validation srocc {ft['srocc']:.4f} against the MS-SSIM stand-in")
    assert lines[2].startswith(f"report: {out / 'report.png'}")
    assert lines[3].endswith("rankiqa predict PHOTOS...")
    with Image.open(out / "report.png") as im:
        assert im.format == "PNG" and im.size[0] >= 800 and im.size[1] > 12 * 100
        pixels = np.asarray(im.convert("RGB"))
    packed = pixels[..., 0].astype(np.int64) << 16 | pixels[..., 1].astype(np.int64) << 8 | pixels[..., 2]
    assert len(np.unique(packed)) > 1000  # photos, not a blank page
    # a second run resumes: nothing is trained or generated again, the same figures come out
    again = CliRunner().invoke(main, ["demo", "--output-dir", str(out), "--device", "cpu",
                                      *quick])
    assert again.exit_code == 0, again.output
    assert again.stderr.count("already reaches max_steps") == 2  # both stages
    assert "ranking data:" not in again.stderr  # the rank data were kept, not made again
    assert again.stdout.splitlines()[:2] == lines[:2]
