"""The training loop: data -> model -> task -> optimizer -> state -> steps, with
periodic eval, metric writing, Orbax checkpoints, preemption and a NaN guard.
One loop for every model."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging

from zoo import models, tasks
from zoo.config import apply_overrides
from zoo.data import build_pipeline
from zoo.data.pipeline import Pipeline
from zoo.errors import ConfigError, NonFiniteLossError
from zoo.parallel import make_mesh, strategies
from zoo.train import init_from, optim, run_folder
from zoo.train import state as state_lib
from zoo.train.checkpoint import Checkpointer, abstract_like
from zoo.train.host_memory import reuse_freed_host_memory
from zoo.train.preemption import PreemptionWatcher
from zoo.train.step import compile_steps, step_options
from zoo.train.writers import MetricWriter, ProgressLines, check_writable, record_phase, repair_metrics

NONFINITE_POLICIES = ('stop', 'skip')


def intervals(config: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, int]:
  """(eval every, checkpoint every) in steps: eval_every / checkpoint.every where set, else
  eval_every_epochs / checkpoint.every_epochs rounded to whole steps."""
  in_steps = lambda steps, epochs: steps if steps is not None else max(1, round(epochs * steps_per_epoch))
  return (in_steps(config.eval_every, config.eval_every_epochs),
          in_steps(config.checkpoint.every, config.checkpoint.every_epochs))


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """config.num_train_steps if positive, else num_epochs * steps_per_epoch."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return int(config.num_epochs * steps_per_epoch)


def for_evaluation(state: state_lib.TrainState) -> state_lib.TrainState:
  """`state` with the optimizer's params average as its params where it keeps one (optimizer.average_decay)."""
  params = optim.evaluation_params(state.params, state.opt_state)
  return state if params is state.params else state.replace(params=params)


def evaluate(eval_step, state, pipeline: Pipeline, split: str, batch_size: int, strategy) -> dict[str, float]:
  """Mean metrics over every example of `split` (padding excluded); `state` in the strategy's layout."""
  sums = None
  for batch in pipeline.eval_batches(split, batch_size):
    batch_sums = eval_step(state, strategy.put_batch(batch))
    sums = batch_sums if sums is None else jax.tree.map(lambda a, b: a + b, sums, batch_sums)
  sums = jax.device_get(sums)
  count = sums.pop('count')
  return {key: float(value / count) for key, value in sums.items()}


def _drop_rows_after(jsonl_path: pathlib.Path, step: int) -> int:
  """On resume, forgets metrics written after the checkpoint (and the final test row).

  Returns the skipped-steps count of the last kept train row (0 if none), so the count carries over.
  """
  if not jsonl_path.exists():
    return 0
  kept = [row for row in repair_metrics(jsonl_path) if row['step'] <= step and row['split'] != 'test']
  jsonl_path.write_text(''.join(json.dumps(row) + '\n' for row in kept))
  train_rows = [row for row in kept if row['split'] == 'train']
  return int(train_rows[-1].get('skipped_steps', 0)) if train_rows else 0


def _window_means(pending: list[dict], first_step: int, policy: str, checkpointer: Checkpointer) -> dict[str, float]:
  """Host means of the steps' metrics over finite steps; applies the non-finite policy.

  Args:
    pending: per-step metric dicts (device scalars), for steps first_step, first_step + 1, ...
  """
  columns = {k: np.asarray(v) for k, v in jax.device_get(jax.tree.map(lambda *x: list(x), *pending)).items()}
  bad = np.flatnonzero(columns['nonfinite'])
  if len(bad) and policy == 'stop':
    index = bad[0]
    last_good = checkpointer.latest_step()
    where = f'{checkpointer.directory / str(last_good)} (step {last_good})' if last_good else 'none yet'
    raise NonFiniteLossError(
        f'Non-finite training at step {first_step + index}: loss={columns["loss"][index]}, '
        f'grad_norm={columns["grad_norm"][index]} (the bad step did not change the params). '
        f'Last good checkpoint: {where}. Fix: lower config.optimizer.learning_rate, set '
        'config.optimizer.grad_clip_norm, check the data, or set config.nonfinite="skip" to skip such batches.')
  finite = columns['nonfinite'] == 0
  means = {k: float(v[finite].mean()) if finite.any() else float('nan')
           for k, v in columns.items() if k != 'nonfinite'}
  means['skipped_steps'] = float(len(bad))
  return means


@dataclasses.dataclass
class Experiment:
  """Everything a config builds before the first step: mesh, model, task, data, optimizer, fresh state
  (canonical layout: global arrays with the rules' shardings) and the parallel strategy."""
  mesh: jax.sharding.Mesh
  model: nn.Module
  task: tasks.Task
  pipeline: Pipeline
  total_steps: int
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state: state_lib.TrainState
  shardings: state_lib.TrainState  # NamedShardings of the state's leaves
  strategy: strategies.JitStrategy | strategies.PmapStrategy


def build_experiment(config: ml_collections.ConfigDict, workdir: pathlib.Path | None, *,
                     raw_data_dir: str | None = None, before_data=None, devices=None) -> Experiment:
  """Builds `config`'s parts in order, failing early on bad config.

  `before_data` (optional) runs once model and task are valid and before the
  data is prepared (the loop checks the workdir's checkpoint there).
  `devices` (default: all) are the devices the mesh spans.
  """
  mesh = make_mesh(config.mesh, devices)
  if jax.default_backend() == 'cpu' and config.cpu_reuse_host_memory:
    reuse_freed_host_memory()
  strategy_name = config.mesh.strategy
  strategies.check(strategy_name, mesh)
  step_options(config)  # fails on bad microbatches / compute_dtype before the data is prepared
  model = models.build(config.model)
  max_length, max_len = config.data.get('max_length'), getattr(model, 'max_len', None)
  if max_length and max_len and max_length > max_len:
    raise ConfigError(f'config.data.max_length={max_length} exceeds config.model.max_len={max_len}, the model\'s '
                      f'longest input; set --config.model.max_len={max_length} or a smaller data.max_length.')
  if strategy_name == 'pmap' and hasattr(model, 'batch_norm_axis_name'):
    model = model.clone(batch_norm_axis_name=strategies.PMAP_AXIS)  # BatchNorm statistics over all devices
  task = tasks.build(config.task, model, **run_folder.task_inputs(config.task))
  if before_data is not None:
    before_data()
  pipeline = build_pipeline(config.data, seed=config.seed, raw_data_dir=raw_data_dir, workdir=workdir)
  if pipeline.vocab is not None and config.model.get('vocab_size', 0) < len(pipeline.vocab):
    raise ConfigError(f'config.model.vocab_size={config.model.get("vocab_size")} is smaller than the data\'s '
                      f'vocabulary ({len(pipeline.vocab)} ids); set it to at least {len(pipeline.vocab)}.')
  if pipeline.largest_label is not None and pipeline.largest_label[0] >= getattr(model, 'num_classes', float('inf')):
    label, where = pipeline.largest_label
    shown = f'label {pipeline.label_names[label]!r} (id {label})' if pipeline.label_names else f'label {label}'
    raise ConfigError(f'{where}: {shown} is out of range for config.model.num_classes={model.num_classes}; '
                      f'set --config.model.num_classes={label + 1} or fix the labels.')
  total_steps = total_train_steps(config, pipeline.steps_per_epoch)
  if total_steps <= 0:
    raise ConfigError(f'The config gives {total_steps} train steps; set config.num_epochs or '
                      'config.num_train_steps to a positive number.')
  tx, schedule = optim.build(config.optimizer, total_steps)
  example = pipeline.example_batch()
  state, shardings = state_lib.create(model, tx, example[task.input_key], config.seed, mesh, config.mesh.rules)
  strategy = strategies.build(strategy_name, mesh, shardings)
  return Experiment(mesh, model, task, pipeline, total_steps, tx, schedule, state, shardings, strategy)


def load_run(workdir: str | pathlib.Path, overrides: list[str] = (), *,
             raw_data_dir: str | None = None) -> tuple[ml_collections.ConfigDict, Experiment, state_lib.TrainState]:
  """(config, experiment, state) of a run folder: its config.json with `overrides` ('a.b=value'),
  and the latest checkpoint's params (the optimizer's params average where it keeps one, as the
  evaluation during training uses) and model state on the experiment's mesh. Writes nothing.
  """
  config = run_folder.read_config(workdir)
  apply_overrides(config, list(overrides))
  experiment = build_experiment(config, pathlib.Path(workdir), raw_data_dir=raw_data_dir)
  saved = run_folder.latest_state(workdir)
  variables = run_folder.evaluation_variables(saved)
  state = experiment.state.replace(
      step=jax.device_put(saved['step'], experiment.shardings.step),
      params=jax.device_put(variables['params'], experiment.shardings.params),
      model_state=jax.device_put(saved['model_state'], experiment.shardings.model_state))
  return config, experiment, state


def evaluate_state(config: ml_collections.ConfigDict, experiment: Experiment, state: state_lib.TrainState,
                   split: str) -> dict[str, float]:
  """Mean metrics of `state` (canonical layout) over every example of `split`."""
  strategy = experiment.strategy
  _, eval_step = compile_steps(experiment.task, experiment.tx, experiment.schedule, strategy, config)
  return evaluate(eval_step, strategy.place_state(state), experiment.pipeline, split, config.data.eval_batch_size,
                  strategy)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       raw_data_dir: str | None = None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest good checkpoint) and tests it.

  SIGTERM/SIGINT save a checkpoint at the next step boundary and return early
  with 'preempted': True. Returns the final test metrics plus 'step', 'wall_s'
  and 'skipped_steps'.
  """
  started = time.time()
  workdir = pathlib.Path(workdir)
  check_writable(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f'--workdir {workdir} is a file; pass a folder (new or of an earlier run).')
  if config.nonfinite not in NONFINITE_POLICIES:
    raise ConfigError(f'config.nonfinite={config.nonfinite!r}; use one of: {", ".join(NONFINITE_POLICIES)}.')
  config_dict = json.loads(config.to_json())
  ckpt_config = config.checkpoint
  checkpointer = Checkpointer(workdir, keep=ckpt_config.keep, keep_best=ckpt_config.keep_best,
                              best_metric=ckpt_config.best_metric, best_mode=ckpt_config.best_mode,
                              async_save=ckpt_config.async_save)
  experiment = build_experiment(config, workdir, raw_data_dir=raw_data_dir,
                                before_data=lambda: checkpointer.check_compatible(config_dict))
  task, pipeline, state, strategy = experiment.task, experiment.pipeline, experiment.state, experiment.strategy
  phase = checkpointer.check_continuation(config_dict, experiment.total_steps)  # {} unless the length changed
  total_steps = experiment.total_steps
  eval_every, save_every = intervals(config, pipeline.steps_per_epoch)
  train_iterator = pipeline.train_iterator()
  start_step, restored = checkpointer.restore_latest(abstract_like(state), train_iterator)
  writer_active = jax.process_index() == 0
  if restored is not None:
    logging.info('Resuming from the checkpoint at step %d in %s', start_step, checkpointer.directory)
    state = restored
  else:
    train_iterator = pipeline.train_iterator()  # a failed restore may have moved it
    if config.init_from:
      state = init_from.initialise(state, config.init_from, experiment.tx, experiment.shardings)
  skipped = 0
  if writer_active:
    skipped = _drop_rows_after(workdir / 'metrics.jsonl', start_step)
    if phase and restored is not None:
      record_phase(workdir, start_step, phase)
    (workdir / 'config.json').write_text(json.dumps(config_dict, indent=2) + '\n')

  train_step, eval_step = compile_steps(task, experiment.tx, experiment.schedule, strategy, config)
  state = strategy.place_state(state)
  writer = MetricWriter(workdir)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
                       disable=not sys.stderr.isatty() or not writer_active)
  lines = ProgressLines(total_steps, start_step, active=writer_active and not sys.stderr.isatty())
  policy = config.nonfinite
  pending, window_start = [], time.time()
  step = start_step
  evaluated_at = None  # (step, eval metrics): the final test reuses them when both splits are one
  try:
    with PreemptionWatcher() as watcher:
      while step < total_steps:
        state, metrics = train_step(state, strategy.put_batch(next(train_iterator)))
        pending.append(metrics)
        step += 1
        progress.update(1)
        last = step == total_steps
        preempted = watcher.should_stop()
        save_now = step % save_every == 0 or last or preempted
        saved_metrics = {}
        if step % config.log_every == 0 or save_now:
          means = _window_means(pending, step - len(pending), policy, checkpointer)
          skipped += int(means.pop('skipped_steps'))
          means['examples_per_s'] = len(pending) * config.data.batch_size / (time.time() - window_start)
          means['skipped_steps'] = skipped
          writer.write(step, 'train', means)
          progress.set_postfix(loss=f'{means["loss"]:.4f}', ex_s=f'{means["examples_per_s"]:.0f}')
          lines.note_train(means)
          saved_metrics.update({f'train_{k}': v for k, v in means.items()})
          pending, window_start = [], time.time()
        if step % eval_every == 0 or last:
          eval_metrics = evaluate(eval_step, for_evaluation(state), pipeline, config.data.eval_split,
                                  config.data.eval_batch_size, strategy)
          writer.write(step, 'eval', eval_metrics)
          evaluated_at = step, eval_metrics
          lines.note_eval(eval_metrics)
          saved_metrics.update({f'eval_{k}': v for k, v in eval_metrics.items()})
        lines.flush(step)
        if save_now:
          checkpointer.save(step, strategy.canonical_state(state), train_iterator, config_dict, saved_metrics)
        if preempted:
          checkpointer.wait()
          return {'preempted': True, 'step': step, 'checkpoint': str(checkpointer.directory / str(step)),
                  'wall_s': time.time() - started}
    if config.data.test_split == config.data.eval_split and evaluated_at and evaluated_at[0] == step:
      test_metrics = evaluated_at[1]
    else:
      test_metrics = evaluate(eval_step, for_evaluation(state), pipeline, config.data.test_split,
                              config.data.eval_batch_size, strategy)
    writer.write(step, 'test', test_metrics)
  finally:
    progress.close()
    writer.close()
    checkpointer.close()
  return {**test_metrics, 'step': step, 'wall_s': time.time() - started, 'skipped_steps': skipped}
