"""Where imports go (docs/ARCHITECTURE.md, "Imports"): at the top of the module, except a heavy
or optional package deferred to first use (torch, transformers, TRL, OpenSpiel, matplotlib, ...)
so that `sepo --help`, `sepo games` and the config models load in a fraction of a second, and
the CLI's per-command imports. A function-local import of the standard library or of a light
sepo module has no such reason, so this test refuses one, unless it is listed below with its
reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sepo"

#: Light modules: importing them costs nothing worth deferring.
LIGHT = ("sepo.errors", "sepo.console", "sepo.games", "sepo.prompts", "sepo.machine",
         "sepo.limits", "sepo.config_model", "sepo.models.paths", "rich", "pydantic", "typer")
#: (module file, imported module) → why it stays inside a function.
EXCEPTIONS = {
    ("games/axelrod_pool.py", "sepo.games"): "the registry imports this module",
    ("rundir.py", "fcntl"): "POSIX only: the lock degrades where it is missing",
}


def local_imports() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module:
                    found.append((path.relative_to(SRC).as_posix(), sub.lineno, sub.module))
                elif isinstance(sub, ast.Import):
                    found += [(path.relative_to(SRC).as_posix(), sub.lineno, a.name)
                              for a in sub.names]
    return found


def test_no_function_local_import_of_a_light_module() -> None:
    offenders = [f"{file}:{line} imports {module}"
                 for file, line, module in local_imports()
                 if (module.split(".")[0] in sys.stdlib_module_names
                     or module.startswith(LIGHT))
                 and (file, module) not in EXCEPTIONS]
    assert not offenders, "\n".join(offenders)


def test_the_cli_and_config_models_load_without_torch() -> None:
    # What the deferred imports buy: prove it, so that a module-level torch import in a light
    # module fails here rather than slowing every command down.
    code = ("import sys, sepo.cli, sepo.train.config, sepo.pipeline, sepo.report, "
            "sepo.evaluation; print(sorted(m for m in ('torch', 'transformers', 'trl', "
            "'matplotlib', 'pyspiel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
