"""Scoring variables of a published config on a split of its real data, as the run's own evaluation scores."""

from __future__ import annotations

import copy
import functools
from typing import Any

import jax
import ml_collections

from zoo import models, tasks
from zoo.data import build_pipeline
from zoo.train.state import TrainState
from zoo.train.step import eval_step, step_options
from zoo.train.weights import WeightsError


def evaluate(config: ml_collections.ConfigDict, variables: dict[str, Any], splits: list[str], *,
             vocab: list[str] | None = None, tfds_dir: str | None = None,
             raw_data_dir: str | None = None) -> dict[str, dict[str, float]]:
  """{split: mean metrics over every example} of `variables` ({'params', ...}) under `config`'s task and data.

  Batches of config.data.eval_batch_size, padding excluded, on one device: the numbers the run's own
  evaluation gives. `vocab` (text models): the published vocabulary, checked against the one the data builds.
  `tfds_dir`: where the prepared dataset is (or is prepared from the raw files in `raw_data_dir`).
  """
  config = copy.deepcopy(config)
  if tfds_dir is not None:
    config.data.tfds_dir = tfds_dir
  pipeline = build_pipeline(config.data, seed=config.seed, raw_data_dir=raw_data_dir)
  if vocab is not None and pipeline.vocab.tokens != list(vocab):
    raise WeightsError('The vocabulary built from the data differs from the published one; the data or the '
                       'config.data section differs from the run\'s. Fix: use the original dataset files.')
  task = tasks.build(config.task, models.build(config.model))
  _, compute_dtype = step_options(config)
  state = TrainState(step=0, params=variables['params'], opt_state=None,
                     model_state={k: v for k, v in variables.items() if k != 'params'}, rng=None)
  step = jax.jit(functools.partial(eval_step, task=task, compute_dtype=compute_dtype))
  results = {}
  for split in splits:
    sums = None
    for batch in pipeline.eval_batches(split, config.data.eval_batch_size):
      batch_sums = step(state, batch)
      sums = batch_sums if sums is None else jax.tree.map(lambda a, b: a + b, sums, batch_sums)
    sums = jax.device_get(sums)
    count = sums.pop('count')
    results[split] = {key: float(value / count) for key, value in sums.items()}
  return results
