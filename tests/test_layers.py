"""The package's shape: layers without cycles (import-linter's contracts in pyproject.toml), names of methods and
datasets only in their own modules, and modules and classes small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import logging_kept

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "uvav"
MAX_MODULE_LINES, MAX_CLASS_LINES = 400, 150


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_layer_contracts_hold():
    """Every import, function-level ones included, goes down the layers of pyproject.toml; no cycle."""
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    with logging_kept():  # its logging setup disables every logger already made (later tests' caplog saw nothing)
        status = lint_imports(config_filename=str(REPO / "pyproject.toml"))
    assert status == 0, "run `lint-imports` for the report"


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_method_and_dataset_names_live_only_in_their_own_modules():
    """A method's or dataset's name ("lora", "pretrain", "av_mnist", ...) is written in its own module only;
    everything else asks the registry (``uvav.methods.FT`` and ``HEAD_ONLY``, the baseline every frozen-base job
    trains, are the names the framework itself is built on)."""
    from uvav.data import DATASETS
    from uvav.methods import METHODS

    owners = {entry.name: Path(inspect_file(entry)).resolve() for entry in [*METHODS, *DATASETS]}
    allowed_elsewhere = {name: {PACKAGE / "methods" / "__init__.py"} for name in ("ft", "head_only")}
    found = []
    for path in _modules():
        for line, value in _string_constants(path):
            owner = owners.get(value)
            if owner and path.resolve() != owner and path.resolve() not in allowed_elsewhere.get(value, set()):
                found.append(f"{path.relative_to(REPO)}:{line}: {value!r}")
    assert not found, "names written outside their module:\n" + "\n".join(found)


def inspect_file(entry) -> str:
    import inspect

    return inspect.getsourcefile(entry.schema)


def test_modules_and_classes_are_small_enough_to_read_in_one_sitting():
    too_long = []
    for path in _modules():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(REPO)}: class {node.name}: {node.end_lineno - node.lineno + 1}")
    assert not too_long, "\n".join(too_long)


def test_no_two_modules_differ_by_a_suffix_only():
    """``evaluate``/``evaluation``, ``predict``/``prediction``: names that say what they hold are not near twins."""
    stems = {}
    for path in _modules():
        stems.setdefault(path.parent, []).append(path.stem if path.stem != "__init__" else path.parent.name)
    twins = []
    for folder, names in stems.items():
        for a in names:
            for b in names:
                if a < b and b.startswith(a) and len(a) >= 4 and b[len(a):] in ("s", "ion", "ing", "ation", "er"):
                    twins.append(f"{folder.relative_to(REPO)}: {a} / {b}")
    assert not twins, twins


@pytest.mark.parametrize("module, name", [("uvav.methods.lora", "LoRALinear"), ("uvav.methods.adapter", "AdaptedMlp"),
                                          ("uvav.data", "AVData")])
def test_moved_names_stay_importable_from_where_plugins_found_them(module, name):
    import importlib
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(importlib.import_module(module), name)
    assert value.__name__ == name
    if module.startswith("uvav.methods"):  # these moved: the warning says where
        assert any("uvav.models.peft" in str(w.message) for w in caught)


# The configuration errors of the README's "When things go wrong" table (first and third rows)
REFUSED = [["trainer.epochs=abc"], ["trainer.no_such_key=1"], ["method=no_such_method"], ["method=pl", "prompt=none"],
           ["prompt.length=0"], ["prompt.length=100000"], ["data.target_length=8"], ["data.root=pyproject.toml"],
           ["backbone.checkpoint=tests"]]


def test_every_configuration_error_is_refused_before_torch_is_imported():
    """Composing and checking a config asks only the registries and schemas: nothing heavy is imported."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from hydra import compose, initialize_config_dir; from uvav.config import config_dir;"
            "from uvav.checks import register_configs, validate; register_configs();"
            "initialize_config_dir(config_dir(), version_base='1.3').__enter__(); refused = []\n"
            f"for overrides in {REFUSED!r}:\n"
            "    try: validate(compose('config', overrides=overrides)); refused.append(None)\n"
            "    except Exception as e: refused.append(type(e).__name__)\n"
            "heavy = [m for m in ('torch', 'timm', 'pandas', 'matplotlib', 'sklearn', 'optuna') if m in sys.modules]\n"
            "print(json.dumps([refused, heavy]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    refused, heavy = json.loads(out.strip().splitlines()[-1])
    assert None not in refused, dict(zip(map(str, REFUSED), refused, strict=True))
    assert heavy == []
