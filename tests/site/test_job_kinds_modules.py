"""Issue 14: every job kind is a thin adapter in its app's job_kinds module."""

import ast
from pathlib import Path

from jobs.registry import registered_kinds

ROOT = Path(__file__).resolve().parents[2]
APPS = ["accounts", "catalog", "training", "generation", "review", "jobs"]
MAX_STATEMENTS = 3  # a kind parses params and calls one service


def test_no_app_has_a_handlers_module():
    assert [app for app in APPS if (ROOT / app / "handlers.py").exists()] == []


def test_every_registered_kind_lives_in_a_job_kinds_module():
    kinds = registered_kinds()
    assert {
        "catalog.import",
        "training.run",
        "generation.shard",
        "review.export",
        "worker_check",
    } <= set(kinds)
    misplaced = {
        name: kind.handler.__module__
        for name, kind in kinds.items()
        if not kind.handler.__module__.endswith(".job_kinds") and not name.startswith("test_")
    }
    assert misplaced == {}


def _kind_functions(path: Path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "register"
            for d in node.decorator_list
        ):
            yield node


def test_job_kinds_parse_params_and_call_one_service():
    too_long = {}
    for app in APPS:
        path = ROOT / app / "job_kinds.py"
        if not path.exists():
            continue
        for fn in _kind_functions(path):
            body = [
                n
                for n in fn.body
                if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            ]
            if len(body) > MAX_STATEMENTS:
                too_long[f"{app}.{fn.name}"] = len(body)
    assert too_long == {}
