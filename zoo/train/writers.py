"""Run-folder outputs: metrics.jsonl, TensorBoard events, and a PNG of the curves."""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Mapping, TextIO

import jax

from zoo.errors import ConfigError


class MetricWriter:
  """Writes one JSON object per line ({'step', 'split', metrics...}) and TensorBoard scalars.

  Only process 0 writes; other processes' calls do nothing. Appends, so a
  resumed run continues the same files.
  """

  def __init__(self, workdir: str | pathlib.Path):
    self.workdir = pathlib.Path(workdir)
    self.active = jax.process_index() == 0
    self.jsonl_path = self.workdir / 'metrics.jsonl'
    self._tensorboard = None
    if self.active:
      from tensorboardX import SummaryWriter  # imported only where used: it is slow to import
      self._tensorboard = SummaryWriter(str(self.workdir / 'tensorboard'))

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.active:
      return
    row = {'step': int(step), 'split': split, **{k: _finite_or_none(v) for k, v in metrics.items()}}
    with self.jsonl_path.open('a') as f:
      f.write(json.dumps(row, allow_nan=False) + '\n')
    for key, value in metrics.items():
      self._tensorboard.add_scalar(f'{split}/{key}', float(value), int(step))

  def close(self) -> None:
    if self.active:
      self._tensorboard.close()
      plot_curves(self.jsonl_path, self.workdir / 'curves.png')


def check_writable(workdir: pathlib.Path) -> None:
  """Raises ConfigError unless this process can create or write the run folder `workdir`."""
  existing = workdir
  try:
    while not existing.exists() and existing != existing.parent:
      existing = existing.parent
  except PermissionError:
    raise ConfigError(f'--workdir {workdir} cannot be reached by this user (uid {os.geteuid()}): a folder on its '
                      'path refuses it; pass a folder you can write, or fix the permissions.') from None
  if not existing.is_dir():
    return  # a file: the caller says so
  effective = os.access in os.supports_effective_ids  # checked as the user the process acts as
  if not os.access(existing, os.W_OK | os.X_OK, effective_ids=effective):
    where = 'it' if existing == workdir else f'its parent {existing}'
    raise ConfigError(f'--workdir {workdir} is not writable ({where} refuses this user, uid {os.geteuid()}); '
                      'pass a folder you can write, or fix its permissions.')


def record_phase(workdir: pathlib.Path, start_step: int, changes: Mapping[str, list]) -> None:
  """Appends {'start_step', 'changes': {key: [before, after]}, 'time'} to workdir/phases.jsonl: the run went
  on from `start_step` with a changed length (num_epochs/num_train_steps); config.json holds the latest."""
  row = {'start_step': int(start_step), 'changes': dict(changes),
         'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  with (workdir / 'phases.jsonl').open('a') as f:
    f.write(json.dumps(row) + '\n')


def _duration(seconds: float) -> str:
  """'42s', '3m05s', '2h07m'."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


class ProgressLines:
  """Plain progress lines for logs (nohup, SLURM, CI), where the progress bar is off: one line per step that
  logged train metrics or evaluated, e.g.

    step 200/4680 (4%)  loss 0.1234  eval accuracy 98.10%  2100 ex/s  elapsed 1m40s  eta 37m12s

  `active` is False on a terminal (the bar shows it) and on processes other than 0. ETA: the mean time of
  the steps run so far in this process (compilation included) times the steps left.
  """

  def __init__(self, total_steps: int, start_step: int, *, active: bool, stream: TextIO | None = None):
    self.total_steps, self.start_step, self.active = total_steps, start_step, active
    self.stream = stream
    self.started = time.time()
    self._train: Mapping[str, float] | None = None
    self._eval: Mapping[str, float] | None = None
    self._examples_per_s: float | None = None

  def note_train(self, means: Mapping[str, float]) -> None:
    self._train = means
    self._examples_per_s = means.get('examples_per_s', self._examples_per_s)

  def note_eval(self, metrics: Mapping[str, float]) -> None:
    self._eval = metrics

  def flush(self, step: int) -> None:
    """Prints the line of `step` if train metrics or eval metrics were noted since the last one."""
    if not self.active or (self._train is None and self._eval is None):
      return
    elapsed = time.time() - self.started
    parts = [f'step {step}/{self.total_steps} ({100 * step / max(self.total_steps, 1):.0f}%)']
    if self._train is not None and 'loss' in self._train:
      parts.append(f'loss {self._train["loss"]:.4f}')
    if self._eval is not None:
      shown = {k: v for k, v in self._eval.items() if k in ('loss', 'accuracy')} or dict(list(self._eval.items())[:2])
      parts.append('eval ' + ' '.join(f'{k} {100 * v:.2f}%' if k == 'accuracy' else f'{k} {v:.4f}'
                                      for k, v in shown.items()))
    if self._examples_per_s is not None:
      parts.append(f'{self._examples_per_s:.0f} ex/s')
    done = step - self.start_step
    eta = elapsed / done * (self.total_steps - step) if done > 0 else float('nan')
    parts.append(f'elapsed {_duration(elapsed)}')
    if math.isfinite(eta):
      parts.append(f'eta {_duration(eta)}')
    print('  '.join(parts), file=self.stream or sys.stderr, flush=True)
    self._train = self._eval = None


def _finite_or_none(value) -> float | None:
  """float(value), or None (JSON null) for NaN and infinities, so metrics.jsonl stays strict JSON."""
  value = float(value)
  return value if math.isfinite(value) else None


def _parse_rows(text: str) -> tuple[list[dict], list[int]]:
  """(rows, line numbers of unparsable lines) of metrics.jsonl text."""
  rows, bad = [], []
  for number, line in enumerate(text.split('\n'), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      row = None
    if isinstance(row, dict) and isinstance(row.get('step'), int) and isinstance(row.get('split'), str):
      rows.append(row)
    else:
      bad.append(number)
  return rows, bad


def read_metrics(path: str | pathlib.Path) -> list[dict]:
  """The rows of a metrics.jsonl file; lines that are not a metrics row (a crash mid-write) are left out.

  Non-finite values were written as null (None here).
  """
  return _parse_rows(pathlib.Path(path).read_text(errors='replace'))[0]


def repair_metrics(path: pathlib.Path) -> list[dict]:
  """The rows of `path` for a resumed run. With unparsable lines, first copies the file aside
  (metrics.jsonl.damaged-<time>), rewrites it without them and prints one warning."""
  text = path.read_text(errors='replace')
  rows, bad = _parse_rows(text)
  if bad:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S')
    copy = path.with_name(f'{path.name}.damaged-{stamp}')
    shutil.copy2(path, copy)
    path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
    print(f'warning: {path}: dropped {len(bad)} unparsable line(s) (line {", ".join(map(str, bad[:5]))}); '
          f'the original is kept as {copy}', file=sys.stderr, flush=True)
  return rows


def plot_curves(jsonl_path: pathlib.Path, png_path: pathlib.Path) -> None:
  """Loss and accuracy against step, one line per split, saved as a PNG."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = read_metrics(jsonl_path) if jsonl_path.exists() else []
  keys = [k for k in ('loss', 'accuracy') if any(r.get(k) is not None for r in rows)]
  if not keys:
    return
  figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
  for axis, key in zip(axes[0], keys):
    for split in ('train', 'eval', 'test'):
      points = [(r['step'], r[key]) for r in rows if r['split'] == split and r.get(key) is not None]
      if points:
        steps, values = zip(*points)
        axis.plot(steps, values, 'o' if len(points) == 1 else '-', label=split)
    axis.set_xlabel('step')
    axis.set_title(key)
    axis.grid(alpha=0.3)
    axis.legend()
  figure.tight_layout()
  figure.savefig(png_path, dpi=100)
  plt.close(figure)
