"""Imports point down (issue 27): the package's units in layers, each importing only units below it (imports
inside functions count too), so there is no circle and no upward arrow. The DAG file is wiring: at parse time it
imports only the Airflow adapters and the names its Params offer."""

from __future__ import annotations

import ast
from pathlib import Path

from layers import DECISION_LAYERS, LAYERS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "inventory_pipeline"


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("inventory_pipeline"):
            base = node.module
            found += [f"{base}.{a.name}" for a in node.names] if base == "inventory_pipeline" else [base]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("inventory_pipeline")]
    return found


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_unit_of_the_package_is_in_a_layer() -> None:
    units = {
        p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "__pycache__")
    }
    assert units - {"__main__"} == set(LAYERS)


def test_imports_point_down() -> None:
    rank = {unit: i for i, unit in enumerate(LAYERS)}
    upward = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        here = relative.parts[0].removesuffix(".py")
        if here == "__init__":
            continue
        for module in _imports(path):
            there = _unit(module)
            if there and there != here and rank[there] > rank[here]:
                upward.append(f"{relative} ({here}) imports {module} ({there})")
    assert not upward, "imports pointing up:\n" + "\n".join(sorted(upward))


def test_the_dag_file_imports_at_parse_time_only_the_adapters_and_the_names_its_params_offer() -> None:
    tree = ast.parse((ROOT / "dags" / "inventory_retraining.py").read_text())
    top = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("inventory_")]
    assert {_unit(m) for m in top} <= {"airflow", "settings", "rules"}, top  # settings and rules: names only


def test_each_package_says_what_it_owns_and_may_import() -> None:
    for unit in LAYERS:
        init = PACKAGE / unit / "__init__.py"
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            assert len(doc) > 40, f"{unit}/__init__.py has no docstring saying what it owns"


def test_inside_decision_the_gate_is_on_top_and_its_steps_import_only_below_them() -> None:
    rank = {module: i for i, layer in enumerate(DECISION_LAYERS) for module in layer}
    modules = {p.stem for p in (PACKAGE / "decision").glob("*.py")} - {"__init__"}
    assert modules == set(rank), "every module of decision/ is in a layer"
    upward = []
    for module in modules:
        for imported in _imports(PACKAGE / "decision" / f"{module}.py"):
            parts = imported.split(".")
            if parts[:2] == ["inventory_pipeline", "decision"] and len(parts) > 2 and parts[2] in rank:
                if rank[parts[2]] >= rank[module] and parts[2] != module:
                    upward.append(f"decision.{module} imports {imported}")
    assert not upward, "\n".join(sorted(upward))
