"""PNG figures of attributions and attention maps (matplotlib, no display needed)."""

from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position


def save_attributions(images: np.ndarray, maps: dict[str, np.ndarray], titles: Sequence[str],
                      path: str | pathlib.Path) -> pathlib.Path:
  """One column per image f32[B, H, W, C]: the image, then each attribution map (summed over channels)."""
  rows = 1 + len(maps)
  figure, axes = plt.subplots(rows, len(images), figsize=(1.6 * len(images), 1.7 * rows), squeeze=False)
  for column, image in enumerate(images):
    axes[0, column].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap='gray')
    axes[0, column].set_title(titles[column], fontsize=7)
    for row, (name, values) in enumerate(maps.items(), start=1):
      heat = values[column].sum(-1)
      limit = np.abs(heat).max() or 1.0
      axes[row, column].imshow(heat, cmap='RdBu_r', vmin=-limit, vmax=limit)
      if column == 0:
        axes[row, column].set_ylabel(name, fontsize=7)
  for axis in axes.flat:
    axis.set_xticks([])
    axis.set_yticks([])
  return _save(figure, path)


def save_attention_maps(weights: Sequence[np.ndarray], tokens: Sequence[str], path: str | pathlib.Path) -> pathlib.Path:
  """One panel per block: head-averaged attention f32[T, T] (query rows, key columns) of one sequence."""
  figure, axes = plt.subplots(1, len(weights), figsize=(3.2 * len(weights), 3.2), squeeze=False)
  for block, (axis, block_weights) in enumerate(zip(axes[0], weights)):
    axis.imshow(block_weights, cmap='viridis', vmin=0.0)
    axis.set_title(f'block {block} (mean over heads)', fontsize=8)
    axis.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
    axis.set_yticks(range(len(tokens)), tokens, fontsize=6)
  return _save(figure, path)


def _save(figure, path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return path
