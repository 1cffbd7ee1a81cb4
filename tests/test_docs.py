"""The documentation stays true: generated pages equal what the code generates, every command
line shown parses with the real CLI, the Python snippet runs, the models table is the
registry's, and the text speaks to users, not of how the project was made."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from rankiqa import cli
from rankiqa_testkit import import_script

ROOT = os.path.join(os.path.dirname(__file__), "..")
PAGES = ["README.md", "BENCHMARKS.md"] + sorted(
    os.path.join("docs", n) for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def _make_docs():
    return import_script("dev/make_docs")


@pytest.mark.parametrize("page", ["docs/cli.md", "docs/configuration.md"])
def test_generated_pages_equal_what_the_code_generates(page):
    generated = _make_docs().PAGES[page]()
    assert read(page) == generated, (
        f"{page} differs from the code: run `python scripts/dev/make_docs.py` and commit it")


def code_blocks(text, languages=("bash", "sh", "console", "")):
    """The fenced code blocks of `languages` (a ```text block shows output, not commands)."""
    blocks, current, language = [], None, None
    for line in text.splitlines():
        fence = line.strip()
        if fence.startswith("```") and current is None:
            current, language = [], fence[3:].strip()
        elif fence == "```" and current is not None:
            if language in languages:
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def command_lines(text):
    """Every `rankiqa ...` line of the shell code blocks, continuation lines joined."""
    lines = []
    for block in code_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().lstrip("$ ").split("  #")[0].strip()
            if line.startswith("rankiqa "):
                lines.append(line)
    return lines


def parses(line, monkeypatch):
    """The CLI's own parsing of `line` (types, choices, required options), nothing run."""
    for command in cli.main.commands.values():
        monkeypatch.setattr(command, "callback", lambda *args, **kwargs: None)
    args = shlex.split(line)[1:]
    if args and args[0] == "launch" and "--" in args:  # the command after -- is its own line
        dash = args.index("--")
        launched = parses("rankiqa " + shlex.join(args[dash + 1:]), monkeypatch)
        if launched is not True:
            return launched
    result = CliRunner().invoke(cli.main, args)
    return True if result.exit_code == 0 else result.output


def test_every_command_line_in_the_docs_and_help_parses(monkeypatch):
    shown = [(page, line) for page in PAGES for line in command_lines(read(page))]
    shown += [("--help", line) for examples in cli.EXAMPLES.values() for line in examples]
    assert len(shown) > 40
    failures = [f"{page}: {line}\n  {outcome}" for page, line in shown
                if (outcome := parses(line, monkeypatch)) is not True]
    assert failures == []


def test_the_parse_check_catches_an_option_that_does_not_exist(monkeypatch):
    assert parses("rankiqa predict photos --modle x", monkeypatch) != True  # noqa: E712
    assert parses("rankiqa predict photos --engine onnx", monkeypatch) is True


def test_every_help_ends_with_examples():
    for name, command in cli.main.commands.items():
        assert 1 <= len(cli.EXAMPLES.get(name, ())) <= 3, name
        out = CliRunner().invoke(cli.main, [name, "--help"], terminal_width=200).output
        assert out.rstrip().endswith(cli.EXAMPLES[name][-1]), name


def test_the_readme_models_table_is_the_registrys():
    from rankiqa.weights import builtin

    text = read("README.md")
    assert builtin.TABLE_HEADER in text
    rows = text.split(builtin.TABLE_HEADER, 1)[1].split("\n\n", 1)[0].strip().splitlines()
    assert rows == [m.table_row() for m in builtin.BUILTIN.values()]


def test_the_readme_python_snippet_runs(photo_dir, tmp_path):
    """As written, on two photos named as the snippet names them, with the default model."""
    from PIL import Image

    (snippet,) = code_blocks(read("README.md"), ("python",))
    photos = sorted(os.listdir(photo_dir))
    for source, name in zip(photos, ("photo.jpg", "other.png")):
        Image.open(os.path.join(photo_dir, source)).convert("RGB").save(tmp_path / name)
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BIQ2021 MOS in [0, 1], higher is better" in out.stdout


def test_the_serving_snippet_runs_without_rankiqa(stage_one, photo_dir, tmp_path):
    """docs/data-formats.md's snippet as written, beside an ONNX export and a copy of
    rankiqa/preprocessing/preprocess.py, prints predict's score."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    (snippet,) = [b for b in code_blocks(read("docs/data-formats.md"), ("python",))
                  if "import preprocess" in b]
    result = CliRunner().invoke(cli.main, ["export-onnx", "--model", stage_one, "--output",
                                           str(tmp_path / "mine.onnx")])
    assert result.exit_code == 0, result.output
    (tmp_path / "preprocess.py").write_text(read(os.path.join("rankiqa", "preprocessing", "preprocess.py")))
    photo = sorted(os.listdir(photo_dir))[0]
    Image.open(os.path.join(photo_dir, photo)).convert("RGB").save(tmp_path / "photo.jpg")
    check = snippet + "\nimport sys\nassert 'rankiqa' not in sys.modules\n"
    out = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = CliRunner().invoke(cli.main, ["predict", str(tmp_path / "photo.jpg"), "--model",
                                           stage_one, "--engine", "tensorflow", "--format",
                                           "json"])
    expected = json.loads(result.stdout)["scores"][0]["score"]
    served = float(out.stdout.strip().strip("[]"))
    assert abs(served - expected) < 1e-5, (served, expected)


# split so that this file does not match itself
HISTORY = re.compile("|".join(["sess" "ion [0-9]", "sess" "ions [0-9]", "sess" "ion's",
                               "earlier sess" "ion", r"\btu" "rn [0-9]"]), re.I)


def test_the_project_text_has_no_history_of_its_making():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = []
    for name in files:
        path = os.path.join(ROOT, name)
        if name.endswith((".npz", ".png")) or os.path.islink(path) or not os.path.isfile(path):
            continue
        for number, line in enumerate(read(name).splitlines(), start=1):
            if HISTORY.search(line) and not re.search(r"tf\.(compat\.v1\.)?Session|"
                                                      r"MonitoredSession", line):
                found.append(f"{name}:{number}: {line.strip()[:100]}")
    assert found == []


def test_the_design_map_lists_every_module():
    """docs/design.md's map names each module of the package in its folder's section; a
    package whose __init__.py holds code counts as listed by its folder's line."""
    import ast
    import re

    block = read(os.path.join("docs", "design.md")).split("## Map of the package", 1)[1]
    listed, folder = set(), ""
    for line in block.split("```", 2)[1].splitlines():
        if re.match(r"^  \w+/\s", line):  # a folder of the package: its section begins
            folder = line.split()[0]
            continue
        if re.match(r"^ ?\S", line) or re.match(r"^  \S", line):
            folder = ""  # the top level of the package, or the repository beside it
        first = re.split(r"\s{2,}", line.strip())[0]
        listed |= {folder + name for name in re.findall(r"\w+\.py|\w+/", first)}
    package = os.path.join(ROOT, "rankiqa")
    missing = []
    for here, _, files in os.walk(package):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(here, name)
            relative = os.path.relpath(path, package).replace(os.sep, "/")
            if name == "__init__.py":
                body = ast.parse(open(path).read()).body
                if not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign))
                           for n in body):
                    continue  # a docstring at most: the folder's line says what it holds
                if os.path.dirname(relative) + "/" in listed:
                    continue
            if relative not in listed:
                missing.append(relative)
    assert missing == [], f"docs/design.md's map misses {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_no_section_is_given_twice(page):
    """A heading twice under one parent (a section pasted twice); docs/configuration.md's
    `init` under each stage's config is two sections."""
    outside_code = re.sub(r"```.*?```", "", read(page), flags=re.S)
    seen, parents = [], {}
    for hashes, title in re.findall(r"^(#+) (.+)$", outside_code, flags=re.M):
        level = len(hashes)
        parents = {k: v for k, v in parents.items() if k < level}
        seen.append((tuple(parents.values()), level, title))
        parents[level] = title
    assert sorted({h for h in seen if seen.count(h) > 1}) == []
