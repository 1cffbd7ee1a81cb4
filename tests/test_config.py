import dataclasses
import glob
import os

import pytest

from rankiqa import config as config_lib
from rankiqa.config import ConfigError, RankConfig

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "rank_*.yaml"))))
def test_shipped_rank_configs_load_and_open_with_a_comment(path):
    cfg = config_lib.load(RankConfig, path)
    assert cfg.data.levels == 6
    with open(path) as f:
        head = f.readline()
    assert head.startswith("#")


def test_defaults_and_overrides_parse_with_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 10\n")
    cfg = config_lib.load(RankConfig, str(path),
                          ["optim.lr=1e-4", "data.distortions=[gblur, wn]", "train.margin=2"])
    assert cfg.train.max_steps == 10
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.distortions == ("gblur", "wn")
    assert cfg.train.margin == 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.max_steps = 3  # frozen


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_stepz: 10\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key train\.max_stepz"):
        config_lib.load(RankConfig, str(path))


def test_unknown_section_and_override(tmp_path):
    with pytest.raises(ConfigError, match="unknown key trainer"):
        config_lib.load(RankConfig, None, ["trainer.x=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        config_lib.load(RankConfig, None, ["train.max_steps"])


def test_wrong_type_names_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_steps: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.max_steps must be int, got 'many'"):
        config_lib.load(RankConfig, str(path))
    with pytest.raises(ConfigError, match="data.cache_decoded must be true or false"):
        config_lib.load(RankConfig, None, ["data.cache_decoded=3"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config_lib.load(RankConfig, str(tmp_path / "none.yaml"))
    path = tmp_path / "broken.yaml"
    path.write_text("train: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config_lib.load(RankConfig, str(path))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "finetune_*.yaml"))))
def test_shipped_finetune_configs_load_and_open_with_a_comment(path):
    cfg = config_lib.load(config_lib.FinetuneConfig, path)
    assert cfg.train.loss in ("l2", "l1")
    with open(path) as f:
        assert f.readline().startswith("#")


def test_renamed_keys_work_with_a_notice_and_clash_with_their_new_name(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("net:\n  init_from: hed-vgg16\ndata:\n  images_per_batch: 3\n")
    notices = []
    cfg = config_lib.load(RankConfig, str(path), notify=notices.append)
    assert cfg.init.source == "hed-vgg16" and cfg.data.references_per_batch == 3
    assert notices == [f"{path}: net.init_from is renamed init.source; it still works for now",
                       f"{path}: data.images_per_batch is renamed data.references_per_batch; "
                       "it still works for now"]
    with pytest.warns(config_lib.ConfigDeprecation, match="net.init_checkpoint is renamed"):
        cfg = config_lib.load(RankConfig, None, ["net.init_checkpoint=runs/x"])
    assert cfg.init.source == "runs/x"
    ft = config_lib.load(config_lib.FinetuneConfig, None, [
        "finetune.checkpoint_exclude_scopes=[a/b]", "finetune.ignore_missing_vars=true"],
        notify=notices.append)
    assert ft.init.exclude_scopes == ("a/b",) and ft.init.ignore_missing is True
    old_default = config_lib.load(config_lib.FinetuneConfig, None,
                                  ["finetune.checkpoint_exclude_scopes=[]"], notify=notices.append)
    assert old_default.init.exclude_scopes is None  # still "the network's head"
    with pytest.raises(ConfigError, match="net.init_from .renamed init.source. and init.source "
                                          "are both set; keep init.source"):
        config_lib.load(RankConfig, None, ["net.init_from=a", "init.source=b"],
                        notify=notices.append)
    # a key renamed in one config class is still unknown in another
    with pytest.raises(ConfigError, match="unknown key data.images_per_batch"):
        config_lib.load(config_lib.FinetuneConfig, None, ["data.images_per_batch=3"])


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "rank_tiny" in config_lib.shipped_configs()
    cfg = config_lib.load(RankConfig, "rank_tiny")
    assert cfg.net.name == "resnet_v2_tiny"
    assert config_lib.load(RankConfig, "rank_tiny.yaml") == cfg
    with pytest.raises(ConfigError, match="does not exist .shipped configs: finetune_biq2021"):
        config_lib.load(RankConfig, "rank_tinny")


def test_recorded_configs_rebuild_with_overrides():
    cfg = config_lib.load(config_lib.FinetuneConfig, None, ["data.eval_crops=3"])
    again = config_lib.from_dict(config_lib.FinetuneConfig, config_lib.to_dict(cfg), "run",
                                 ["train.max_steps=7"])
    assert again.data.eval_crops == 3 and again.train.max_steps == 7


@pytest.mark.parametrize("override, message", [
    ("data.references_per_batch=0", "data.references_per_batch must be >= 1, got 0"),
    ("data.eval_crops=0", "data.eval_crops must be >= 1, got 0"),
    ("train.max_steps=-5", "train.max_steps must be >= 0, got -5"),
    ("optim.lr=-1", "optim.lr must be >= 0, got -1.0"),
    ("net.batch_norm_decay=1.5", "net.batch_norm_decay must be in [0, 1], got 1.5"),
    # TensorFlow takes a 64-bit seed at most; past it, a traceback from deep in the graph
    ("train.seed=99999999999999999999",
     "train.seed must be in [0, 2147483647], got 99999999999999999999"),
])
def test_out_of_range_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=r"<defaults> \(with --set\): " + message.replace(
            "[", r"\[").replace("]", r"\]")):
        config_lib.load(RankConfig, None, [override])


def test_duplicate_keys_and_broken_yaml_are_one_line_with_file_and_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  max_steps: 10\n  seed: 1\n  max_steps: 20\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: invalid YAML: key 'max_steps' is given "
                                          r"twice \(first on line 2\)"):
        config_lib.load(RankConfig, str(path))
    path.write_text("train:\n  max_steps: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        config_lib.load(RankConfig, str(path))
    assert str(info.value).startswith(f"{path}:3: invalid YAML: ") and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"data.batch_size must be >= 1, got -2"):
        config_lib.load(config_lib.FinetuneConfig, None, ["data.batch_size=-2"])


BOMB = """\
- &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
- &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
- &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
- &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
- &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
- &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
- &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


@pytest.mark.parametrize("key", ["data.distortions", "train.max_steps"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, key):
    section, name = key.split(".")
    lines = "".join("    " + line + "\n" for line in BOMB.splitlines())  # 9^7 values
    (tmp_path / "bomb.yaml").write_text(f"{section}:\n  {name}:\n{lines}")
    with pytest.raises(ConfigError, match=r"bomb.yaml: expands to over 100,000 values") as e:
        config_lib.load(RankConfig, str(tmp_path / "bomb.yaml"))
    assert len(str(e.value)) < 200


def test_long_values_are_shortened_in_messages():
    with pytest.raises(ConfigError) as e:
        config_lib.load(RankConfig, None, ["train.max_steps=" + "9" * 10_000 + "x"])
    assert "train.max_steps must be int, got '9999" in str(e.value) and len(str(e.value)) < 200


@pytest.mark.parametrize("old, new", [("finetune.probe", "probe.enabled"),
                                      ("finetune.probe_rank_rule", "probe.rank_rule"),
                                      ("finetune.rank_list", "signals.rank_list"),
                                      ("finetune.teacher_weight", "signals.teacher_weight")])
def test_keys_moved_out_of_finetune_are_refused_with_their_new_name(old, new, tmp_path):
    with pytest.raises(ConfigError, match=rf"{old} is now {new}"):
        config_lib.load(config_lib.FinetuneConfig, None, [f"{old}=1"])
    section, key = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {key}: 1\n")
    with pytest.raises(ConfigError, match=rf"old.yaml: {old} is now {new}"):
        config_lib.load(config_lib.FinetuneConfig, str(path))


def test_an_earlier_runs_recorded_config_moves_its_keys():
    """A run recorded before stage two's sections split still evaluates and resumes as it
    was configured; a --set of an old key on top of it is refused all the same."""
    recorded = {"finetune": {"probe": True, "probe_crops": 3, "probe_rank_weight": 0.3,
                             "rank_list": "r.csv", "rank_weight": 0.5, "teacher_table": "t.csv",
                             "mos_weight": 0.0, "head_lr_multiplier": 2.0}}
    cfg = config_lib.from_dict(config_lib.FinetuneConfig, recorded, "rankiqa.json",
                               recorded=True)
    assert (cfg.probe.enabled, cfg.probe.crops, cfg.probe.rank_weight) == (True, 3, 0.3)
    assert (cfg.signals.rank_list, cfg.signals.rank_weight, cfg.signals.teacher_table,
            cfg.signals.mos_weight) == ("r.csv", 0.5, "t.csv", 0.0)
    assert cfg.finetune == config_lib.TransferConfig(head_lr_multiplier=2.0)
    with pytest.raises(ConfigError, match="finetune.rank_weight is now signals.rank_weight"):
        config_lib.from_dict(config_lib.FinetuneConfig, recorded, "rankiqa.json",
                             ["finetune.rank_weight=1"], recorded=True)


def test_a_config_in_another_encoding_or_not_a_file_is_one_error(tmp_path):
    (tmp_path / "utf16.yaml").write_bytes("train:\n  max_steps: 2\n".encode("utf-16"))
    cfg = config_lib.load(RankConfig, str(tmp_path / "utf16.yaml"))
    assert cfg.train.max_steps == 2  # what spreadsheets and some editors save: read
    (tmp_path / "latin1.yaml").write_bytes(b"# caf\xe9\ntrain:\n  max_steps: 2\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:1: not UTF-8 text \(byte 0xe9\); save"):
        config_lib.load(RankConfig, str(tmp_path / "latin1.yaml"))
    os.mkfifo(tmp_path / "fifo.yaml")
    for path in (str(tmp_path / "fifo.yaml"), "/dev/zero"):
        with pytest.raises(ConfigError, match=f"config file {path} is not a regular file"):
            config_lib.load(RankConfig, path)


def test_a_look_alike_key_is_shown_escaped():
    with pytest.raises(ConfigError, match=r"unknown key tr\\u0430in \(it holds characters that "
                                          "are not ASCII"):
        config_lib.load(RankConfig, None, ["tr\u0430in.max_steps=3"])
