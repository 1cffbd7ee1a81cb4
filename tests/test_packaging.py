"""What a non-editable install carries: the shipped configs the demo and `--config NAME` need."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_wheel_carries_the_configs_and_the_demo_finds_them_from_another_folder(tmp_path):
    # built from a copy: setuptools leaves build/ and egg-info in the tree it builds
    source = tmp_path / "source"
    shutil.copytree(os.path.join(ROOT, "rankiqa"), source / "rankiqa",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = glob.glob(str(tmp_path / "wheel" / "rankiqa-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "site")
    shipped = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    assert sorted(os.listdir(tmp_path / "site" / "rankiqa" / "configs")) == shipped
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import os, rankiqa.demo as d; "
            "print(d.RANK_CONFIG); assert os.path.isfile(d.FINETUNE_CONFIG)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=elsewhere,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(tmp_path / "site" / "rankiqa" / "configs" / "rank_tiny.yaml")


def test_recipe_scripts_parse_and_name_configs_that_load():
    """Every shell script parses, and every config a recipe script names exists and loads."""
    import re

    from rankiqa import config as config_lib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scripts = sorted(glob.glob(os.path.join(root, "scripts", "**", "*.sh"), recursive=True))
    assert scripts
    for script in scripts:
        subprocess.run(["bash", "-n", script], check=True)
        for name in re.findall(r"configs/(\w+)\.yaml", open(script).read()):
            cls = config_lib.RankConfig if name.startswith("rank_") else config_lib.FinetuneConfig
            config_lib.load(cls, os.path.join(root, "configs", f"{name}.yaml"))
