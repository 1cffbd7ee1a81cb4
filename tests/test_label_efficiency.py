"""scripts/studies/label_efficiency.py on tiny synthetic features: both studies run and report what
the documentation's tables hold."""

import os

import numpy as np

from rankiqa_testkit import import_script


def _study():
    return import_script("studies/label_efficiency")


def write_features(folder, rng, photos=420, dims=12):
    """Features whose first direction is quality, plus ladders that lower it level by level."""
    w = np.zeros(dims)
    w[0] = 1.0

    def photos_of(n):
        x = rng.normal(size=(n, 2, dims))
        return x, x.mean(1) @ w * 0.1 + 0.5 + rng.normal(scale=0.02, size=n)

    def ladders(n):
        base = rng.normal(size=(n, 1, 2, dims))
        return base - 0.5 * np.arange(6)[None, :, None, None] * w + rng.normal(
            scale=0.05, size=(n, 6, 2, dims))

    x, y = photos_of(photos)
    paths = np.array([os.path.join(folder, f"{k}.jpg") for k in range(photos)])
    np.savez(os.path.join(folder, "train.npz"), features=x, scores=y, paths=paths)
    x, y = photos_of(120)
    np.savez(os.path.join(folder, "val.npz"), features=x, scores=y, paths=paths[:120])
    np.savez(os.path.join(folder, "rank.npz"), features=ladders(40),
             references=np.repeat(np.arange(10), 4), families=np.array(["gblur"] * 40))
    np.savez(os.path.join(folder, "ladders.npz"), features=ladders(8),
             photos=np.array(["p"] * 8), families=np.array(["gblur", "wn", "jpeg", "contrast"] * 2))
    with open(os.path.join(folder, "unlabelled.txt"), "w") as f:
        f.write("".join(f"{p}\n" for p in paths[:20]))


def test_the_study_and_the_simulation_on_tiny_features(tmp_path, capsys):
    study = _study()
    write_features(str(tmp_path), np.random.default_rng(0))
    args = [str(tmp_path), "--unlabelled", str(tmp_path / "unlabelled.txt")]
    assert study.main(args + ["--draws", "2", "--components", "8", "--weights", "1,3",
                              "--plot", str(tmp_path / "n.png")]) == 0
    table = capsys.readouterr().out
    assert "| 0 | ranking only (alpha 100) | 1 |" in table
    assert "| 100 | MOS + ranking, the rule's weight (3) | 2 |" in table
    assert "| 400 | MOS only | 1 |" in table  # every labelled photo: 420 minus 20 unlabelled
    assert (tmp_path / "n.png").stat().st_size > 0
    assert study.main(args + ["--active", "--seeds", "1", "--strategies", "random,typical"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[2].startswith("| random | ") and "| typical | " in table
    # the ranking-only head orders these ladders: their only direction is quality
    rows = study.study(study.project({n: study.load(str(tmp_path), n) for n in
                                      ("train", "val", "ladders", "rank")}, 8),
                       {os.path.realpath(str(tmp_path / f"{k}.jpg")) for k in range(20)}, 1,
                       [1.0], log=lambda line: None)
    assert rows[("ranking only (alpha 100)", 0)][0][2] > 0.95
