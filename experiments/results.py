"""Re-runs rows of the README's results table and rewrites the table.

  python experiments/results.py --rows=mnist_mlp,binarized_mnist_vae   # or --rows=all

Each row trains experiments/configs/<row>.py with the project's launcher in
runs/results/<row> (fresh, seeded), then its result is stored in
experiments/results.jsonl (one object per row, the newest kept, with the machine,
date and commit) and the table between the README's RESULTS markers is
regenerated from that file. Without --rows, only the table is regenerated.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from absl import app, flags

from zoo import benchmarking
from zoo.train import run_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / 'experiments' / 'results.jsonl'
README = REPO / 'README.md'

# row -> (split whose final line holds the result, metric key, how to show it, target as text, check).
# 'eval' is the config's eval split (validation); the test result is shown beside it.
ROWS = {
    'mnist_mlp': ('test', 'accuracy', '{:.2%} test acc.', '≥ 98.3%', lambda v: v >= 0.983),
    'mnist_cnn': ('test', 'accuracy', '{:.2%} test acc.', '≥ 99.2%', lambda v: v >= 0.992),
    'fashion_mnist_resnet': ('test', 'accuracy', '{:.2%} test acc.', '≥ 93.0%', lambda v: v >= 0.930),
    'sst2_lstm': ('test', 'accuracy', '{:.2%} dev acc.', '≥ 85.5%', lambda v: v >= 0.855),
    'sst2_transformer': ('test', 'accuracy', '{:.2%} dev acc.', '≥ 82%', lambda v: v >= 0.82),
    'shakespeare_lstm': ('eval', 'loss', '{:.3f} nats/char val.', '≤ 1.50 val.', lambda v: v <= 1.50),
    'shakespeare_transformer': ('eval', 'loss', '{:.3f} nats/char val.', '≤ 1.50 val.', lambda v: v <= 1.50),
    'binarized_mnist_vae': ('test', 'loss', '{:.1f} nats neg. ELBO test', '≤ 100', lambda v: v <= 100),
}

_ROWS = flags.DEFINE_list('rows', [], f'Rows to re-run, or "all": {", ".join(ROWS)}.')
_EXTRA = flags.DEFINE_multi_string('override', [], 'Extra --config.* flags for every row.')


def run_row(row: str, overrides=()) -> dict:
  """Trains one row from scratch; returns its results entry."""
  workdir = REPO / 'runs' / 'results' / row
  if workdir.exists():
    shutil.rmtree(workdir)
  command = [sys.executable, str(REPO / 'experiments' / 'train.py'),
             f'--config={REPO / "experiments" / "configs" / f"{row}.py"}', f'--workdir={workdir}', *overrides]
  started = time.time()
  subprocess.run(command, check=True)
  wall_s = time.time() - started
  lines = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  config = run_folder.read_config(workdir)
  split, key = ROWS[row][:2]
  final = {line['split']: line for line in lines}  # the last line of each split
  entry = {'row': row, 'split': split, 'metric': key, 'value': final[split][key], 'steps': final[split]['step']}
  if split != 'test':
    entry['test_value'] = final['test'][key]
  return {**entry,
          'epochs': config['num_epochs'] if config['num_train_steps'] <= 0 else None,
          'wall_s': round(wall_s), 'cores': os.cpu_count(), 'machine': benchmarking.cpu_name(),
          'command': ' '.join(['python', *map(str, command[1:])]).replace(str(REPO) + '/', ''),
          'date': time.strftime('%Y-%m-%d'), 'commit': benchmarking.commit()}


def render(entries: dict[str, dict]) -> str:
  """The markdown table of every row (rows not run yet say so)."""
  lines = ['| config | result | target | met | steps (epochs) | wall time | machine | date | command |',
           '|---|---|---|---|---|---|---|---|---|']
  for row, (_, _, shown, target, check) in ROWS.items():
    entry = entries.get(row)
    if entry is None:
      lines.append(f'| {row} | not run yet | {target} | | | | | | `python experiments/results.py --rows={row}` |')
      continue
    epochs = f' ({entry["epochs"]})' if entry.get('epochs') else ''
    result = shown.format(entry['value'])
    if 'test_value' in entry:
      result += f' ({entry["test_value"]:.3f} test)'
    lines.append(f'| {row} | {result} | {target} | {"yes" if check(entry["value"]) else "no"} '
                 f'| {entry["steps"]}{epochs} | {entry["wall_s"] / 60:.1f} min '
                 f'| {entry.get("machine", "CPU")}, {entry["cores"]} cores | {entry["date"]} '
                 f'| `python experiments/results.py --rows={row}` |')
  return '\n'.join(lines)


def main(argv):
  del argv
  rows = list(ROWS) if _ROWS.value == ['all'] else _ROWS.value
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    sys.exit(f'error: unknown rows {unknown}; choose from: {", ".join(ROWS)}')
  entries = {}
  if RESULTS.exists():
    entries = {e['row']: e for e in map(json.loads, RESULTS.read_text().splitlines())}
  for row in rows:
    entries[row] = run_row(row, _EXTRA.value)
    RESULTS.write_text(''.join(json.dumps(entries[r]) + '\n' for r in ROWS if r in entries))
    print(json.dumps(entries[row]))
  benchmarking.write_between_markers(README, 'RESULTS', render(entries))


if __name__ == '__main__':
  app.run(main)
