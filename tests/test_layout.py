"""The import rules of docs/ARCHITECTURE.md, checked over the source (lazy imports
included): imports point down, and no file takes part in an import cycle."""
import ast
import os

from helpers import REPO

PACKAGES = ("models", "data", "train", "commands", "configs", "errors", "run")
# package -> the packages of ours it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "models": {"errors"},
    "data": {"errors"},
    "configs": set(),            # configs import only configs.common (checked below)
    "train": {"errors", "models", "data"},
    "commands": {"errors", "models", "data", "train"},
    "run": {"errors", "train", "commands"},
}


def source_files() -> dict[str, str]:
    """module name -> path, for every Python file of ours outside tests/ and benchmarks/."""
    out = {}
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("tests", "benchmarks", "runs")]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(root, f)
    return out


def imports_of(path: str, modules: dict) -> set[str]:
    """Our modules that `path` imports anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                while name and name not in modules:  # `from train import loop` -> train.loop
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
    return found


def test_imports_point_down():
    modules = source_files()
    bad = []
    for module, path in modules.items():
        top = module.split(".")[0]
        for imported in imports_of(path, modules):
            other = imported.split(".")[0]
            if other == top:
                continue
            if other not in ALLOWED[top]:
                bad.append(f"{module} imports {imported}")
        if top == "configs" and module != "configs.common":
            bad += [f"{module} imports {i}" for i in imports_of(path, modules) if i != "configs.common"]
    assert not bad, "imports that point up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    modules = source_files()
    graph = {m: imports_of(p, modules) - {m} for m, p in modules.items()}
    # a package's __init__ is imported by its submodules implicitly: not an edge we add
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_loop_holds_no_tooling():
    """The CLI verbs, sweeps, reports and inspect live in commands/, not in train/."""
    train_files = set(os.listdir(os.path.join(REPO, "train")))
    assert not train_files & {"cli.py", "sweeps.py", "report.py", "inspect_run.py", "config_errors.py"}


def test_every_config_key_the_code_reads_is_defined():
    """`config.<section>.<key>` (also through `c` or `exp.config`) read anywhere outside
    configs/ exists in base_config(), so it can be set and shows in config.json."""
    from configs.common import base_config
    base = base_config()
    methods = {"get", "items", "keys", "values", "update", "to_dict", "get_ref", "unlock", "lock"}
    missing = set()
    for module, path in source_files().items():
        if module.startswith("configs"):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
                continue
            section, key, owner = node.value.attr, node.attr, node.value.value
            owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if (owner_name in ("config", "c") and section in base and section not in ("model", "task")
                    and key not in methods and key not in base[section]):
                missing.add(f"{module}: config.{section}.{key}")
    assert not missing, "read but not defined in configs/common.py:\n" + "\n".join(sorted(missing))
