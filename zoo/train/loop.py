"""The training loop: data -> model -> task -> optimizer -> state -> steps, with
periodic eval, metric writing and Orbax checkpoints. One loop for every model."""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from zoo import models, tasks
from zoo.data import build_pipeline
from zoo.data.pipeline import Pipeline
from zoo.parallel import batch_sharding, make_mesh, shard_batch
from zoo.train import optim
from zoo.train import state as state_lib
from zoo.train.checkpoint import Checkpointer, abstract_like
from zoo.train.step import compile_steps
from zoo.train.writers import MetricWriter, read_metrics


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """config.num_train_steps if positive, else num_epochs * steps_per_epoch."""
  if config.get('num_train_steps', -1) > 0:
    return config.num_train_steps
  return int(config.num_epochs * steps_per_epoch)


def evaluate(eval_step, state, pipeline: Pipeline, split: str, batch_size: int, mesh) -> dict[str, float]:
  """Mean metrics over every example of `split` (padding excluded)."""
  sums = None
  for batch in pipeline.eval_batches(split, batch_size):
    batch_sums = eval_step(state, shard_batch(batch, mesh))
    sums = batch_sums if sums is None else jax.tree.map(lambda a, b: a + b, sums, batch_sums)
  sums = jax.device_get(sums)
  count = sums.pop('count')
  return {key: float(value / count) for key, value in sums.items()}


def _drop_rows_after(jsonl_path: pathlib.Path, step: int) -> None:
  """On resume, forget metrics written after the checkpoint (and the final test row)."""
  if jsonl_path.exists():
    kept = [row for row in read_metrics(jsonl_path) if row['step'] <= step and row['split'] != 'test']
    jsonl_path.write_text(''.join(json.dumps(row) + '\n' for row in kept))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       raw_data_dir: str | None = None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and tests it.

  Returns the final test metrics plus 'step' and 'wall_s'.
  """
  started = time.time()
  workdir = pathlib.Path(workdir)
  config_dict = json.loads(config.to_json())
  checkpointer = Checkpointer(workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  checkpointer.check_compatible(config_dict)

  mesh = make_mesh(config.mesh)
  pipeline = build_pipeline(config.data, seed=config.seed, raw_data_dir=raw_data_dir)
  total_steps = total_train_steps(config, pipeline.steps_per_epoch)
  model = models.build(config.model)
  task = tasks.build(config.task, model)
  tx, schedule = optim.build(config.optimizer, total_steps)
  example = pipeline.example_batch()
  state, shardings = state_lib.create(model, tx, example[task.input_key], config.seed, mesh, config.mesh.rules)
  train_iterator = pipeline.train_iterator()
  start_step = checkpointer.latest_step() or 0
  writer_active = jax.process_index() == 0
  if start_step:
    logging.info('Resuming from the checkpoint at step %d in %s', start_step, checkpointer.directory)
    state = checkpointer.restore(start_step, abstract_like(state), train_iterator)
    if writer_active:
      _drop_rows_after(workdir / 'metrics.jsonl', start_step)
  if writer_active:
    (workdir / 'config.json').write_text(json.dumps(config_dict, indent=2) + '\n')

  train_step, eval_step = compile_steps(task, tx, schedule, shardings, batch_sharding(mesh))
  writer = MetricWriter(workdir)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
                       disable=not sys.stderr.isatty() or not writer_active)
  pending, window_start = [], time.time()
  step = start_step
  while step < total_steps:
    state, metrics = train_step(state, shard_batch(next(train_iterator), mesh))
    pending.append(metrics)
    step += 1
    progress.update(1)
    last = step == total_steps
    if step % config.log_every == 0 or last:
      means = {k: float(np.mean(v)) for k, v in jax.device_get(jax.tree.map(lambda *x: list(x), *pending)).items()}
      means['examples_per_s'] = len(pending) * config.data.batch_size / (time.time() - window_start)
      writer.write(step, 'train', means)
      progress.set_postfix(loss=f'{means["loss"]:.4f}', ex_s=f'{means["examples_per_s"]:.0f}')
      logging.info('step %d/%d: %s', step, total_steps, means)
      pending, window_start = [], time.time()
    if step % config.eval_every == 0 or last:
      eval_metrics = evaluate(eval_step, state, pipeline, config.data.eval_split, config.data.eval_batch_size, mesh)
      writer.write(step, 'eval', eval_metrics)
      logging.info('step %d eval on %s: %s', step, config.data.eval_split, eval_metrics)
    if step % config.checkpoint.every == 0 or last:
      checkpointer.save(step, state, train_iterator, config_dict)
  progress.close()

  test_metrics = evaluate(eval_step, state, pipeline, config.data.test_split, config.data.eval_batch_size, mesh)
  writer.write(step, 'test', test_metrics)
  writer.close()
  checkpointer.close()
  return {**test_metrics, 'step': step, 'wall_s': time.time() - started}
