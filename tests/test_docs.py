"""The README stays a front door: short, current results table, model cards linked, links that resolve, no history."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

DOCS = [REPO / 'README.md', REPO / 'benchmarks' / 'README.md', *sorted((REPO / 'docs').rglob('*.md'))]
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


def test_readme_is_short_and_links_every_model_card():
  readme = (REPO / 'README.md').read_text()
  assert len(readme.splitlines()) <= 200
  cards = sorted(p.relative_to(REPO).as_posix() for p in (REPO / 'docs' / 'models').glob('*.md'))
  assert cards, 'docs/models/ has no model cards'
  missing = [card for card in cards if f']({card})' not in readme]
  assert not missing, f'model cards not linked from the README models table: {missing}'


def test_docs_links_resolve():
  broken = []
  for page in DOCS:
    for target in LINK.findall(page.read_text()):
      if re.match(r'[a-z]+:', target):  # http(s):, mailto:
        continue
      if not (page.parent / target).exists():
        broken.append(f'{page.relative_to(REPO)} -> {target}')
  assert not broken, broken


def test_docs_and_configs_describe_the_project_not_its_history():
  pages = DOCS + sorted((REPO / 'experiments' / 'configs').glob('*.py'))
  hits = [f'{p.relative_to(REPO)}: {m.group(0)}' for p in pages
          for m in re.finditer(r'session [0-9]+|this session', p.read_text(), re.IGNORECASE)]
  assert not hits, hits


def test_readme_results_table_is_what_results_py_renders():
  """experiments/results.py regenerates the table between the markers from results.jsonl (no training)."""
  code = ('import json, sys; sys.path.insert(0, "experiments"); import results; '
          'entries = {e["row"]: e for e in map(json.loads, results.RESULTS.read_text().splitlines())}; '
          'print(results.render(entries))')
  rendered = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=True).stdout.strip()
  readme = (REPO / 'README.md').read_text()
  table = readme.split('<!-- RESULTS:BEGIN -->', 1)[1].split('<!-- RESULTS:END -->', 1)[0].strip()
  assert table == rendered
  assert '| machine |' in table.splitlines()[0]


def test_planning_table_is_what_plan_table_py_renders():
  """experiments/plan_table.py regenerates docs/planning.md's table from the planner's committed JSON lines."""
  code = ('import sys; sys.path.insert(0, "experiments"); import plan_table as t; '
          'print(t.render(t.read_rows(t.PLANS), t.read_rows(t.SEARCHES)))')
  rendered = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=True).stdout.strip()
  doc = (REPO / 'docs' / 'planning.md').read_text()
  assert doc.split('<!-- PLANS:BEGIN -->', 1)[1].split('<!-- PLANS:END -->', 1)[0].strip() == rendered
  assert rendered.count('\n') == 1 + 4 * 4, 'one row per config x topology'
