"""The library stays a library: no Prefect, and no heavy imports on the CLI's start-up path."""

import subprocess
import sys


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_tagifai_never_imports_prefect():
    statement = (
        "import importlib, pkgutil, tagifai; "
        "[importlib.import_module(m.name) for m in "
        "pkgutil.iter_modules(tagifai.__path__, 'tagifai.')]"
    )
    assert "prefect" not in imported_after(statement)


def test_cli_start_up_is_light():
    heavy = {"prefect", "great_expectations", "feast", "mlflow", "sklearn", "optuna"}
    heavy |= {"onnxruntime", "tokenizers"}
    assert not heavy & imported_after("import tagifai.cli")
