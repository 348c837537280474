"""The layout's import rules (docs/architecture.md): no import cycle inside halos_jax, and the
plain-Python packages (schedule, network) never import JAX-side ones."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "halos_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
  """module -> halos_jax modules it imports anywhere in its code (top level or in a function)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        # `from pkg import mod` needs pkg.mod (Python runs pkg/__init__ first, which is not a
        # dependency of pkg.mod on the package); `from mod import name` needs mod.
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                   else node.module for a in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def _cycle(graph):
  state, stack = {}, []

  def visit(n):
    state[n] = "open"
    stack.append(n)
    for m in sorted(graph[n]):
      if state.get(m) == "open":
        return stack[stack.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    stack.pop()
    state[n] = "done"
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_no_import_cycle():
  cycle = _cycle(_graph())
  assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_plain_python_packages_import_no_jax_side_package():
  graph = _graph()
  jax_side = ("halos_jax.optim", "halos_jax.models", "halos_jax.replay", "halos_jax.train")
  for name, edges in graph.items():
    if name.startswith(("halos_jax.schedule", "halos_jax.network")):
      bad = sorted(e for e in edges if e.startswith(jax_side))
      assert not bad, f"{name} imports {bad}"
