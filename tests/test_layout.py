"""The arrows of the architecture run one way: `app` and `experiments` use `toy_tasks` and `interp`;
`toy_tasks` uses `interp`; `interp` names neither `experiments` nor `app`, not even by a string it imports;
`app` reaches experiments only through `interp.registry`. Read from the source with `ast`."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPORTERS = ("import_module", "__import__", "find_spec", "import_from_string", "run_module")


def modules_named(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, and every dotted-module string passed to an importer."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in IMPORTERS:
                out += [(node.lineno, a.value) for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # a module path spelled out anywhere
            if node.value.split(".")[0] in ("experiments", "app") and "." in node.value and " " not in node.value:
                out.append((node.lineno, node.value))
    return out


def offences(folder: str, banned: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, mod in modules_named(path):
            if mod.split(".")[0] in banned:
                found.append(f"{path.relative_to(ROOT)}:{line} names {mod}")
    return found


@pytest.mark.parametrize("folder, banned", [
    ("interp", ("experiments", "app", "toy_tasks")),
    ("toy_tasks", ("experiments", "app")),
    ("app", ("experiments",)),
    ("experiments", ("app",)),
])
def test_imports_run_one_way(folder, banned):
    assert offences(folder, banned) == []


def test_the_checker_sees_every_kind_of_mention(tmp_path, monkeypatch):
    """The check itself can fail: a static import, an import by name and a dotted string are all caught."""
    bad = tmp_path / "interp"
    bad.mkdir()
    (bad / "x.py").write_text("import importlib\nfrom experiments import sinks\nimportlib.import_module('app')\n"
                              "PATH = 'experiments.sinks'\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert len(offences("interp", ("experiments", "app"))) == 3


def test_every_experiment_is_registered_and_the_registry_is_what_the_cli_and_app_use():
    import tomllib

    from interp.registry import registry

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["interp.experiments"]
    on_disk = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(declared) == on_disk == sorted(registry())
    for src in ("interp/cli.py", "app/views/home.py"):
        assert "registry" in (ROOT / src).read_text(), src
