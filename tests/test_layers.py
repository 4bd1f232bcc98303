"""The package's layers hold: no module imports a layer above its own (import-linter's contract
in pyproject.toml), and no import circle exists among the modules, counting imports made inside
functions too (grimp sees those)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def circles(graph) -> list[list[str]]:
    """Every direct import a -> b for which b also reaches a, as the chain b -> ... -> a; a package
    importing its own children (or a child its package) is not counted."""
    found = []
    for imp in graph.find_matching_direct_imports(
        import_expression="influence_lab.** -> influence_lab.**"
    ):
        a, b = imp["importer"], imp["imported"]
        if a.startswith(b + ".") or b.startswith(a + "."):
            continue
        chain = graph.find_shortest_chain(importer=b, imported=a)
        if chain and not any(
            x.startswith(y + ".") or y.startswith(x + ".")
            for x, y in zip(chain, chain[1:], strict=False)
        ):
            found.append([a, *chain])
    return found


def test_no_import_circle():
    found = circles(grimp.build_graph("influence_lab"))
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found[:5])


def test_circle_check_sees_a_circle():
    graph = grimp.ImportGraph()
    for m in ("influence_lab", "influence_lab.a", "influence_lab.b", "influence_lab.c"):
        graph.add_module(m)
    graph.add_import(importer="influence_lab.a", imported="influence_lab.b")
    graph.add_import(importer="influence_lab.b", imported="influence_lab.c")
    assert circles(graph) == []
    graph.add_import(importer="influence_lab.c", imported="influence_lab.a")
    assert len(circles(graph)) == 3


def test_layers_contract_is_kept():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    assert "1 kept, 0 broken" in out.stdout


def test_no_module_name_is_repeated_and_no_module_rebinds_its_class():
    """A file name says what is inside: no two modules of the package share a name (beyond
    `__init__.py`), and no module replaces its own class (`il.report` is a plain function)."""
    src = ROOT / "src" / "influence_lab"
    seen: dict[str, list[str]] = {}
    for path in src.rglob("*.py"):
        if path.name != "__init__.py" and "__pycache__" not in path.parts:
            seen.setdefault(path.name, []).append(str(path.relative_to(src)))
    repeated = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not repeated, f"repeated module names: {repeated}"
    rebinding = [p for p in src.rglob("*.py") if ".__class__ =" in p.read_text()]
    assert not rebinding, f"modules rebinding a class: {rebinding}"
    import influence_lab as il

    assert callable(il.report) and callable(il.counterfactual)
    import influence_lab.evaluation.statistics  # noqa: F401  (importing a subpackage keeps them)
    import influence_lab.reporting.sections  # noqa: F401

    assert il.report.__module__ == "influence_lab.api"


def test_settings_are_validated_once_at_the_entry():
    """Below `entry/` no module validates settings again: the stages' entry turns the config into
    typed settings once, and pieces (load_data, build_model, fit, embedders, index) take them typed.
    A call of `section(`, `from_config(` or `validated(` outside settings/, entry/ and the top
    (api, cli) fails."""
    import re

    src = ROOT / "src" / "influence_lab"
    allowed = {"settings", "entry"}
    top = {"api.py", "cli.py"}
    calls = re.compile(r"(?<![\w.])(section|from_config|validated)\(")
    found = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src)
        if rel.parts[0] in allowed or str(rel) in top or "__pycache__" in rel.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if calls.search(line) and not line.lstrip().startswith(("def ", "#")):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "settings validated below the entry:\n" + "\n".join(found)
