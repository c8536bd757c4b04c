"""Imports run one way: no cycle between zoo's modules, and none between its rooms (zoo.models, zoo.train, ...).

The graph counts every import statement, also those inside functions, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import pathlib

from conftest import REPO


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  """'pkg.sub.mod' for root/pkg/sub/mod.py ('pkg.sub' for its __init__.py)."""
  parts = path.relative_to(root).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph(package: pathlib.Path) -> dict[str, set[str]]:
  """module -> the package's modules it imports (any import statement anywhere in its source)."""
  root = package.parent
  modules = {module_name(p, root): p for p in package.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    is_package = path.name == '__init__.py'
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:  # relative: resolved against this module's package
          anchor = name.split('.') if is_package else name.split('.')[:-1]
          anchor = anchor[:len(anchor) - node.level + 1]
          base = '.'.join(anchor + ([base] if base else []))
        targets.add(base)
        targets.update(f'{base}.{alias.name}' for alias in node.names)
    resolved = set()
    for target in targets:
      while target and target not in modules:  # 'pkg.mod.func' -> 'pkg.mod'
        target = target.rpartition('.')[0]
      if target and target != name:
        resolved.add(target)
    graph[name] = resolved
  return graph


def room(module: str, package: str) -> str:
  """The room of a module: its package's top-level subpackage or module ('zoo.train' for 'zoo.train.loop')."""
  return '.'.join(module.split('.')[:2]) if module != package else package


def room_graph(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
  """room -> rooms it imports (the package's own __init__ is left out: it may re-export any room)."""
  rooms: dict[str, set[str]] = {}
  for module, targets in graph.items():
    if module == package:
      continue
    source = room(module, package)
    rooms.setdefault(source, set()).update(room(t, package) for t in targets if t != package)
    rooms[source].discard(source)
  return rooms


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as [a, b, ..., a], or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = 2
    path.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_zoo_has_no_module_cycle():
  cycle = find_cycle(import_graph(REPO / 'zoo'))
  assert cycle is None, 'module import cycle: ' + ' -> '.join(cycle)


def test_zoo_has_no_cycle_between_rooms():
  cycle = find_cycle(room_graph(import_graph(REPO / 'zoo'), 'zoo'))
  assert cycle is None, 'room import cycle: ' + ' -> '.join(cycle)


def test_models_and_kernels_import_nothing_above_them():
  rooms = room_graph(import_graph(REPO / 'zoo'), 'zoo')
  lowest = {'zoo.kernels', 'zoo.errors'}
  assert rooms['zoo.kernels'] <= lowest
  assert rooms['zoo.models'] <= lowest | {'zoo.registry'}


def _write(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  for relative, source in files.items():
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(source)
  return root / 'pkg'


def test_the_checks_find_a_lazy_module_cycle_and_a_room_cycle(tmp_path):
  package = _write(tmp_path, {
      'pkg/__init__.py': '',
      'pkg/low/__init__.py': '',
      'pkg/low/a.py': 'from pkg.low import b\n',
      'pkg/low/b.py': 'def f():\n  from . import a  # lazy, still a cycle\n',
      'pkg/high/__init__.py': 'from pkg.high.c import g\n',
      'pkg/high/c.py': 'import pkg.low.a\ndef g():\n  pass\n',
  })
  graph = import_graph(package)
  assert find_cycle(graph) == ['pkg.low.a', 'pkg.low.b', 'pkg.low.a']
  assert find_cycle(room_graph(graph, 'pkg')) is None  # high -> low only
  (package / 'low' / 'b.py').write_text('import os\n')
  (package / 'low' / 'd.py').write_text('def h():\n  from pkg.high.c import g\n')  # low -> high, lazily
  graph = import_graph(package)
  assert find_cycle(graph) is None
  assert find_cycle(room_graph(graph, 'pkg')) == ['pkg.high', 'pkg.low', 'pkg.high']
