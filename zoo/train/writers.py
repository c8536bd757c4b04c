"""Run-folder outputs: metrics.jsonl, TensorBoard events, and a PNG of the curves."""

from __future__ import annotations

import json
import pathlib
from typing import Mapping

import jax


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
    row = {'step': int(step), 'split': split, **{k: float(v) for k, v in metrics.items()}}
    with self.jsonl_path.open('a') as f:
      f.write(json.dumps(row) + '\n')
    for key, value in metrics.items():
      self._tensorboard.add_scalar(f'{split}/{key}', float(value), int(step))

  def close(self) -> None:
    if self.active:
      self._tensorboard.close()
      plot_curves(self.jsonl_path, self.workdir / 'curves.png')


def read_metrics(path: str | pathlib.Path) -> list[dict]:
  """The rows of a metrics.jsonl file."""
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def plot_curves(jsonl_path: pathlib.Path, png_path: pathlib.Path) -> None:
  """Loss and accuracy against step, one line per split, saved as a PNG."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = read_metrics(jsonl_path) if jsonl_path.exists() else []
  keys = [k for k in ('loss', 'accuracy') if any(k in r for r in rows)]
  if not keys:
    return
  figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
  for axis, key in zip(axes[0], keys):
    for split in ('train', 'eval', 'test'):
      points = [(r['step'], r[key]) for r in rows if r['split'] == split and key in r]
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
