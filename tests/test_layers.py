"""The import layering of DESIGN.md, checked on the source (every import, lazy ones included).

``camera`` sits below everything; the part packages (``data``, ``nerf``, ``motion``, ``head3d``,
``audio``, ``metrics``) never import ``models``, ``train`` or ``launch``; ``data`` does not import
``nerf`` (camera maths is ``camera``'s); and no module imports itself through others (no import cycles).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARTS = ("data", "nerf", "motion", "head3d", "audio", "metrics")


def _unit(module: str) -> str:
  """'minerf_jax.data.face' -> 'data'; 'launch.x' -> 'launch'; 'minerf_jax' -> ''."""
  parts = module.split(".")
  if parts[0] == "launch":
    return "launch"
  if parts[0] != "minerf_jax":
    return None
  return parts[1] if len(parts) > 1 else ""


def _imports(path: pathlib.Path) -> set[str]:
  """Every module named by an import in ``path`` (``from a import b`` gives a.b too)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


def _graph() -> dict[str, set[str]]:
  """unit -> the other units it imports (minerf_jax's subpackages/modules and launch)."""
  graph = {}
  files = list((ROOT / "minerf_jax").rglob("*.py")) + list((ROOT / "launch").rglob("*.py"))
  for path in files:
    rel = path.relative_to(ROOT).with_suffix("")
    unit = _unit(".".join(rel.parts))
    if not unit:
      continue
    deps = {_unit(m) for m in _imports(path)}
    # 'from minerf_jax import camera' names the unit through its attribute.
    deps = {d for d in deps if d and d != unit}
    deps.discard("__init__")
    graph.setdefault(unit, set()).update(deps)
  return graph


def test_camera_imports_nothing_of_the_project():
  assert not {_unit(m) for m in _imports(ROOT / "minerf_jax" / "camera.py")} - {None}


@pytest.mark.parametrize("part", PARTS)
def test_parts_do_not_import_models_train_or_launch(part):
  bad = _graph().get(part, set()) & {"models", "train", "launch"}
  assert not bad, f"minerf_jax/{part} imports {sorted(bad)}"


def test_data_does_not_import_nerf():
  assert "nerf" not in _graph()["data"]


def _module_graph() -> dict[str, set[str]]:
  """module -> the project modules it imports (importing a.b.c runs a/__init__ and a/b/__init__
  first, so those count as imported too)."""
  files = list((ROOT / "minerf_jax").rglob("*.py")) + list((ROOT / "launch").rglob("*.py"))
  name = lambda path: ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
      ".__init__")
  modules = {name(p): p for p in files}
  graph = {}
  for mod, path in modules.items():
    deps = set()
    for imported in _imports(path):
      parts = imported.split(".")
      for i in range(1, len(parts) + 1):   # the module itself and every package above it
        if ".".join(parts[:i]) in modules:
          deps.add(".".join(parts[:i]))
    deps.discard(mod)
    # A package's own __init__ importing its submodules is not a cycle with them.
    graph[mod] = {d for d in deps if not mod.startswith(d + ".")}
  return graph


def test_no_import_cycles():
  graph = _module_graph()
  state = {}

  def visit(unit, stack):
    state[unit] = "open"
    for dep in sorted(graph.get(unit, ())):
      if state.get(dep) == "open":
        raise AssertionError("import cycle: " + " -> ".join(stack + [unit, dep]))
      if dep not in state:
        visit(dep, stack + [unit])
    state[unit] = "done"

  for unit in sorted(graph):
    if unit not in state:
      visit(unit, [])
