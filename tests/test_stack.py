"""The library reads as a stack: no import cycles (function-level imports included), and dvc.yaml lists exactly
the modules each stage's notebook runs, so a code change reruns what it must and nothing else."""

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_OF = {"encoders": "01_encoders", "pretrain": "02_pretrain_projectors", "finetune": "03_finetune", "evaluate": "04_evaluate"}


def avlib_imports(source: str) -> set[str]:
    """The avlib modules a piece of code imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "avlib":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("avlib."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("avlib.")}
    return found


def import_graph() -> dict[str, set[str]]:
    return {p.stem: avlib_imports(p.read_text()) for p in sorted((ROOT / "avlib").glob("*.py")) if p.stem != "__init__"}


def closure(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, set())
    return seen


def test_avlib_imports_form_no_cycle():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            assert state.get(imported) != "open", "import cycle: " + " -> ".join([*path, module, imported])
            if imported not in state:
                visit(imported, [*path, module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_cycle_check_can_fail():
    graph = {"a": {"b"}, "b": {"a"}}
    assert closure({"a"}, graph) == {"a", "b"}  # the walk follows every edge
    assert avlib_imports("def f():\n    from avlib.judge import x\n    import avlib.media\n") == {"judge", "media"}


def test_each_stage_depends_on_exactly_the_modules_its_notebook_runs():
    graph = import_graph()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, notebook in NOTEBOOK_OF.items():
        definition = stages[stage].get("do", stages[stage])
        listed = {Path(d).stem for d in definition["deps"] if d.startswith("avlib/")}
        runs = closure(avlib_imports((ROOT / "notebooks" / f"{notebook}.py").read_text()), graph)
        assert listed == runs, f"{stage}: dvc.yaml lists {sorted(listed - runs)} it does not run, misses {sorted(runs - listed)}"
        assert f"notebooks/{notebook}.ipynb" in definition["deps"]
