"""House rules on the training code (issue 25): config objects across boundaries, not argument
chains (at most 8 parameters, `self`/`cls` aside); the project's own modules imported at the top
(lazy imports are for heavy third-party dependencies only)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "colorfilter" / "models").glob("*.py")) + [
    REPO / "colorfilter" / "pipeline" / "train.py"
]
MAX_PARAMETERS = 8


def functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return [name for name in names if name not in ("self", "cls")]


def test_no_function_takes_more_than_eight_parameters():
    long = [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({len(parameters(node))})"
            for path in FILES for node in functions(path)
            if len(parameters(node)) > MAX_PARAMETERS]  # fmt: skip
    assert long == []


def test_own_modules_are_imported_at_the_top():
    lazy = [f"{path.relative_to(REPO)}:{inner.lineno}"
            for path in FILES for node in functions(path) for inner in ast.walk(node)
            if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("colorfilter")
            or isinstance(inner, ast.Import)
            and any(a.name.startswith("colorfilter") for a in inner.names)]  # fmt: skip
    assert lazy == []
