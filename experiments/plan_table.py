"""Rewrites the planner table in docs/planning.md from the planner's JSON lines.

  python experiments/plan_table.py

One row per config x topology of the grid below: the newest line of benchmarks/plan_tpu.jsonl for it
(the config's own layout), and the best layout --search found (the first line of the newest search for
it in benchmarks/plan_search_tpu.jsonl; plan.py --search writes its plans best first). Cells never
compiled say so, with the command that fills them.
"""

from __future__ import annotations

import json
import pathlib

from absl import app

from zoo import benchmarking

REPO = pathlib.Path(__file__).resolve().parents[1]
PLANS = REPO / 'benchmarks' / 'plan_tpu.jsonl'
SEARCHES = REPO / 'benchmarks' / 'plan_search_tpu.jsonl'
DOC = REPO / 'docs' / 'planning.md'
CONFIGS = ('imagenet_resnet50', 'imagenet_vit_b16', 'imagenet_vgg16', 'sst2_bert_base')
TOPOLOGIES = ('v5e-16', 'v5e-256', 'v5p-64', 'v4-32')


def _key(row: dict) -> tuple[str, str]:
  return pathlib.Path(row['config']).stem, row['topology']


def read_rows(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def best_searched(rows: list[dict]) -> dict[tuple[str, str], dict]:
  """(config, topology) -> the first plan of the newest search for it (rows in file order, best first per search)."""
  best, previous = {}, None
  for row in rows:
    search = (_key(row), row.get('command'), row.get('date'))
    if search != previous:  # the first line of a search: its best plan; later searches replace earlier ones
      best[_key(row)] = row
    previous = search
  return best


def layout(row: dict) -> str:
  mesh = ', '.join(f'{axis} {size}' for axis, size in row['mesh'].items() if size > 1) or 'one chip'
  remat = f', remat {row["remat"]}' if row.get('remat') not in (None, 'none') else ''
  micro = f', {row["microbatches"]} micro-batches' if row['microbatches'] > 1 else ''
  return mesh + remat + micro


def _gib(count: float) -> str:
  return f'{count / 2 ** 30:.2f} GiB'


def render(plans: list[dict], searches: list[dict]) -> str:
  """The markdown table of the grid."""
  newest = {_key(row): row for row in plans}
  searched = best_searched(searches)
  lines = ['| config | topology | batch | mesh | params + opt. state / chip | temporaries / chip | total / chip '
           '| fits | XLA flops / step | analytic flops / step | compile s | best layout found by `--search` |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for config in CONFIGS:
    for topology in TOPOLOGIES:
      row, best = newest.get((config, topology)), searched.get((config, topology))
      found = 'not searched'
      if best:
        estimate = f', XLA est. {best["xla_estimated_step_s"] * 1e3:.1f} ms' if best['xla_estimated_step_s'] else ''
        found = f'{layout(best)}: {_gib(best["total_bytes"])}{estimate}'
      if row is None:
        lines.append(f'| {config} | {topology} | | | not compiled: `python experiments/plan.py --config={config} '
                     f'--topology={topology}` | | | | | | | {found} |')
        continue
      lines.append(
          f'| {config} | {topology} ({row["chips"]} x {row["device_kind"]}) | {row["batch_size"]} | {layout(row)} '
          f'| {_gib(row["params_bytes"] + row["optimizer_bytes"])} | {_gib(row["temp_bytes"])} '
          f'| {_gib(row["total_bytes"])} of {_gib(row["hbm_bytes"])} | {"yes" if row["fits"] else "no"} '
          f'| {row["xla_flops_per_step"]:.3g} | {row["analytic_flops_per_step"]:.3g} | {row["compile_s"]:.0f} '
          f'| {found} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  benchmarking.write_between_markers(DOC, 'PLANS', render(read_rows(PLANS), read_rows(SEARCHES)))


if __name__ == '__main__':
  app.run(main)
