"""Writes the reference pages that are generated from the code, so that they cannot drift:
docs/cli.md from the click commands (every option, its type, default and help, and each
command's examples), docs/configuration.md from the config dataclasses (every key, its type,
default, range and the comment that explains it).

    python scripts/dev/make_docs.py          # rewrite both pages
    python scripts/dev/make_docs.py --check  # exit 1 naming a page that differs from the code
"""

import argparse
import dataclasses
import inspect
import os
import sys
import typing

import click

from rankiqa import cli, config

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
PAGES = {"docs/cli.md": lambda: cli_page(), "docs/configuration.md": lambda: configuration_page()}
COMMAND = "python scripts/dev/make_docs.py"


# --------------------------------------------------------------------------- CLI


def _type_text(param):
    if isinstance(param.type, click.Choice):
        return " \\| ".join(f"`{c}`" for c in param.type.choices)
    if param.is_flag if isinstance(param, click.Option) else False:
        return "flag"
    return param.type.name.replace("integer range", "integer").replace("float range", "number")


def _option_row(param):
    names = ", ".join(f"`{n}`" for n in param.opts + param.secondary_opts)
    unset = param.default in (None, False, ()) or str(param.default).startswith("Sentinel")
    default = "" if unset or param.is_flag else f"`{param.default}`"
    text = " ".join((param.help or "").split()).replace("|", "\\|")
    if param.multiple:
        text += " (repeatable)"
    if param.required:
        text += " **Required.**"
    return f"| {names} | {_type_text(param)} | {default} | {text} |"


def cli_page():
    lines = ["# Command line reference", "",
             "What every `rankiqa` command does, takes and prints, with examples that run as "
             "written. Generated from the commands themselves by "
             f"`{COMMAND}`; a test fails when this page and the code disagree.", "",
             "```text", _help_text([]).rstrip(), "```", ""]
    for group, names in cli.COMMAND_GROUPS.items():
        lines += [f"## {group}", ""]
        for name in names:
            command = cli.main.commands[name]
            ctx = click.Context(command, info_name=f"rankiqa {name}", parent=None)
            lines += [f"### `rankiqa {name}`", "",
                      " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split()), "",
                      "```text", command.get_usage(ctx).replace("Usage: ", ""), "```", ""]
            rest = inspect.cleandoc(command.help or "").split("\n\n")[1:]
            for paragraph in rest:
                lines += [" ".join(paragraph.split()), ""]
            options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
            arguments = [p for p in command.params if isinstance(p, click.Argument)
                         and p.metavar != ""]
            if arguments:
                lines += ["Arguments: " + ", ".join(
                    f"`{a.make_metavar(ctx) if hasattr(a, 'make_metavar') else a.name}`"
                    for a in arguments), ""]
            if options:
                lines += ["| option | takes | default | meaning |", "|---|---|---|---|"]
                lines += [_option_row(p) for p in options] + [""]
            examples = cli.EXAMPLES.get(name, ())
            if examples:
                lines += ["Examples:", "", "```bash", *examples, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _help_text(args):
    from click.testing import CliRunner

    return CliRunner().invoke(cli.main, [*args, "--help"], prog_name="rankiqa",
                              terminal_width=100).output


# --------------------------------------------------------------------------- configuration


def _field_comments(cls):
    """``{field: comment}``: the comment on a field's line, else the comment lines above it."""
    source = inspect.getsource(cls).splitlines()
    comments, above = {}, []
    for line in source[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        if ":" in stripped and not stripped.startswith(('"""', "def ", "@")):
            name = stripped.split(":", 1)[0].strip()
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            comments[name] = " ".join(part for part in (" ".join(above), trailing) if part)
        above = []
    return comments


def _type_name(annotation):
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = str(annotation).replace("typing.", "") if not text or "[" in str(annotation) else text
    return (text.replace("Tuple[str, ...]", "list of str").replace("Tuple[int, ...]", "list of int")
            .replace("Tuple[float, ...]", "list of float").replace("Optional[str]", "str or null")
            .replace("Optional[bool]", "bool or null")
            .replace("Optional[Tuple[str, ...]]", "list of str or null"))


def _default_text(value):
    if value is None:
        return "`null`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _range_text(key):
    low, high = config.RANGES.get(key, (None, None))
    if low is None and high is None:
        return ""
    if high is None:
        return f"≥ {low}"
    return f"{low} to {high}"


def configuration_page():
    lines = ["# Configuration reference", "",
             "Every key of the YAML configs that `--config` reads and `--set section.key=value` "
             "overrides: its type, default, allowed range and meaning. An unknown key or a value "
             "out of range is refused when the config loads, naming the key and the file. "
             f"Generated from the config dataclasses by `{COMMAND}`; a test fails when this "
             "page and the code disagree.", ""]
    for cls, commands in ((config.RankConfig, "`rankiqa train-rank`"),
                          (config.FinetuneConfig, "`rankiqa finetune` and `rankiqa evaluate`")):
        lines += [f"## {cls.__name__}: {commands}", ""]
        for section in dataclasses.fields(cls):
            section_cls = section.default_factory
            hints = typing.get_type_hints(section_cls)
            comments = {}
            for klass in reversed(section_cls.__mro__):
                if dataclasses.is_dataclass(klass):
                    comments.update(_field_comments(klass))
            lines += [f"### `{section.name}` ({section_cls.__name__})", "",
                      "| key | type | default | range | meaning |", "|---|---|---|---|---|"]
            defaults = section_cls()
            for f in dataclasses.fields(section_cls):
                key = f"{section.name}.{f.name}"
                meaning = comments.get(f.name, "").replace("|", "\\|")
                lines.append(f"| `{key}` | {_type_name(hints[f.name])} | "
                             f"{_default_text(getattr(defaults, f.name))} | {_range_text(key)} | "
                             f"{meaning} |")
            lines.append("")
    renamed = getattr(config, "RENAMED", {})
    if renamed:
        lines += ["## Renamed keys", "", "Still read, with a one-line notice:", "",
                  "| old key | new key |", "|---|---|"]
        lines += [f"| `{old}` | `{new}` |" for old, new in sorted(renamed.items())] + [""]
    moved = getattr(config, "MOVED", {})
    if moved:
        lines += ["## Moved keys", "", "Refused in a config you write, the message naming the new "
                  "key; moved silently in an earlier run's recorded config (rankiqa.json), so "
                  "that it still evaluates and resumes:", "", "| old key | new key |", "|---|---|"]
        lines += [f"| `{old}` | `{new}` |" for old, new in sorted(moved.items())] + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for page, make in PAGES.items():
        path = os.path.join(ROOT, page)
        text = make()
        current = open(path).read() if os.path.isfile(path) else None
        if args.check:
            if current != text:
                stale.append(page)
        elif current != text:
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {page}")
    if stale:
        print(f"{', '.join(stale)} differ from the code; run `{COMMAND}`", file=sys.stderr)
    return int(bool(stale))  # the exit status: 1 when a page is stale


if __name__ == "__main__":
    sys.exit(main())
