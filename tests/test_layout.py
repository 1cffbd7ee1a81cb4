"""The package's shape: light tools load no TensorFlow, imports run one way, functions stay
readable."""

import ast
import os
import subprocess
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "rankiqa")


@pytest.mark.parametrize("code", [
    "import rankiqa.data.generate, rankiqa.run.rundir, rankiqa.weights.builtin, rankiqa.run.device",
    "from rankiqa.cli import main; main(['--help'])",
    "from rankiqa.cli import main; main(['models'])",
    "from rankiqa.cli import main; main(['predict', '--help'])",
])
def test_light_tools_do_not_import_tensorflow(code):
    """make-rank-data's workers, `rankiqa --help` and `rankiqa models` pay no TensorFlow start-up
    (seconds per process)."""
    probe = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n" \
            "print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def _modules():
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, os.path.join(PACKAGE, ".."))[:-3].replace(os.sep, ".")
                found[module[:-len(".__init__")] if module.endswith(".__init__") else module] = path
    return found


def _import_graph():
    modules = _modules()
    edges = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            targets |= {n for n in names if n in modules and n not in (module, "rankiqa")}
        edges[module] = targets
    return edges


def test_imports_run_one_way():
    edges = _import_graph()
    into_training = [(m, n) for m, targets in edges.items() for n in targets
                     if n.startswith("rankiqa.train") and not m.startswith("rankiqa.train")
                     and m not in ("rankiqa.cli", "rankiqa.demo")]
    assert into_training == [], "only the CLI and the demo may import training code"
    state = {}

    def visit(module, stack):  # depth-first: a module met again on its own stack is a cycle
        state[module] = "open"
        for target in sorted(edges[module]):
            assert state.get(target) != "open", f"import cycle: {' -> '.join(stack + [target])}"
            if target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_no_function_is_over_60_lines():
    """Measured as a reader meets a function: from its ``def`` to its last line, docstring
    included. Met by naming steps, never by packing lines."""
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert long == [], "over 60 lines: " + "; ".join(long)


def test_at_most_12_modules_at_the_top_level():
    """The folders say the roles (serve/, run/, weights/, preprocessing/, train/, data/,
    nets/, tools/); the top level keeps what every role shares."""
    top = sorted(m for m in _modules() if m.count(".") == 1
                 and os.path.isfile(os.path.join(PACKAGE, m.split(".")[1] + ".py")))
    assert len(top) <= 12, top


def test_serving_never_imports_training_and_run_infrastructure_imports_no_tensorflow():
    edges = _import_graph()
    serving = [(m, n) for m, targets in edges.items() for n in targets
               if m.startswith("rankiqa.serve") and n.startswith("rankiqa.train")]
    assert serving == []
    for module, path in _modules().items():
        if module.startswith("rankiqa.run."):
            tree = ast.parse(open(path).read())
            top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            names = [getattr(n, "module", None) or n.names[0].name for n in top_level]
            assert not any("tensorflow" in name or name == "rankiqa.compat" for name in names), \
                f"{module} imports TensorFlow when it is imported"
