"""Length-bucketed batches for text: examples of similar length share a batch, cut to its longest example.

The order is a function of (seed, epoch) only: each epoch's examples are shuffled, cut into windows of
`window` batches, sorted by length inside each window and cut into batches, and the batches of the epoch
are shuffled. So every batch holds similar lengths while the epoch still mixes short and long batches, and
global batch i is the same on every process and after a resume (grain's iterator state is its position).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class LengthBuckets:
  """Global batch number -> the example indices of that batch (i64[batch_size]).

  Attributes:
    lengths: i64[N], the length of every example of the split (tokens before padding).
    batch_size: examples per global batch; the remainder of each epoch is dropped.
    seed: fixes every epoch's order.
    window: batches sorted together (larger: more uniform lengths in a batch, less shuffled).
  """
  lengths: np.ndarray
  batch_size: int
  seed: int
  window: int = 32

  def __post_init__(self):
    self.steps_per_epoch = len(self.lengths) // self.batch_size
    self._epoch, self._plan = None, None

  def epoch_plan(self, epoch: int) -> np.ndarray:
    """i64[steps_per_epoch, batch_size]: the batches of `epoch`, in order."""
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(len(self.lengths))[:self.steps_per_epoch * self.batch_size]
    chunk = self.window * self.batch_size
    parts = [part[np.argsort(self.lengths[part], kind='stable')]
             for part in (order[start:start + chunk] for start in range(0, len(order), chunk))]
    batches = np.concatenate(parts).reshape(self.steps_per_epoch, self.batch_size)
    return batches[rng.permutation(self.steps_per_epoch)]

  def __call__(self, batch_number: int) -> np.ndarray:
    epoch, index = divmod(int(batch_number), self.steps_per_epoch)
    if epoch != self._epoch:  # one plan per epoch, made on first use (also after a resume)
      self._epoch, self._plan = epoch, self.epoch_plan(epoch)
    return self._plan[index]


@dataclasses.dataclass
class TrimToLongest:
  """Reads a global batch with `read` and cuts its 'tokens' to the batch's longest example, rounded up to a
  multiple of `multiple` (fewer shapes, fewer compilations). The length comes from the whole global batch,
  so every process cuts its rows the same."""
  read: Any
  lengths: np.ndarray
  multiple: int

  def __call__(self, global_indices: np.ndarray) -> dict[str, np.ndarray]:
    batch = self.read(global_indices)
    longest = max(int(self.lengths[global_indices].max()), 1)
    batch['tokens'] = batch['tokens'][:, :-(-longest // self.multiple) * self.multiple]
    return batch


def token_lengths(tokens: np.ndarray, pad_id: int = 0) -> np.ndarray:
  """i64[N]: tokens before the right padding of each row of i32[N, T]."""
  real = tokens != pad_id
  return np.where(real.any(1), tokens.shape[1] - np.argmax(real[:, ::-1], axis=1), 0).astype(np.int64)
