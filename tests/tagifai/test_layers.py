"""The layers hold: the library imports nothing above it, the flows nothing of the platform,
and the command line starts without the heavy libraries.

The check reads every module's syntax tree, so an import inside a function (or a module
name handed to ``importlib.import_module``) counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tagifai.config import REPO_ROOT

# What each layer must never import (the first part of the module name).
FORBIDDEN: dict[str, frozenset[str]] = {
    "tagifai": frozenset(
        {"prefect", "prefect_dask", "flows", "deployments", "benchmarks", "tests"}
    ),
    "flows": frozenset({"deployments", "benchmarks", "tests"}),
    "deployments": frozenset({"benchmarks", "tests"}),
}


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute module name the tree imports, with its line."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
        ):
            first = node.args[0]
            text = first.value if isinstance(first, ast.Constant) else ast.unparse(first)
            names.append((node.lineno, str(text).strip("f'\"")))
    return names


def upward_imports(root: Path) -> list[str]:
    """``path:line imports name`` for every import that reaches above its module's layer."""
    found = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((root / layer).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for line, name in imported_names(tree):
                if name.split(".")[0] in forbidden:
                    found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


def test_no_layer_imports_a_layer_above_it():
    assert upward_imports(REPO_ROOT) == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    (tmp_path / "tagifai").mkdir()
    (tmp_path / "tagifai" / "steps.py").write_text(
        "import pandas\n\n\ndef run():\n    from prefect import flow\n    import flows.mlops\n"
    )
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "dataops.py").write_text(
        "import importlib\n\n\ndef run():\n"
        "    return importlib.import_module('deployments.platform')\n"
    )
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "cli.py").write_text("import flows.dataops\nimport tagifai\n")
    assert upward_imports(tmp_path) == [
        "tagifai/steps.py:5 imports prefect",
        "tagifai/steps.py:6 imports flows.mlops",
        "flows/dataops.py:5 imports deployments.platform",
    ]


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_cli_start_up_is_light():
    heavy = {"prefect", "great_expectations", "feast", "mlflow", "sklearn", "optuna", "pandas"}
    heavy |= {"onnxruntime", "tokenizers"}
    assert not heavy & imported_after("import deployments.cli")
