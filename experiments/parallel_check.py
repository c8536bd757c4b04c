"""Shows that parallelism changes speed, never results: one config, the same steps, several layouts.

  python experiments/parallel_check.py --config=experiments/configs/mnist_cnn.py --num_devices=8 \
      [--layouts=single,data,fsdp,fsdp_tensor,pmap] [--steps=20] [--set=compute_dtype='bfloat16']

Each layout trains the config for --steps steps from the same seed on the same
global batches; the first layout is the reference. Prints one JSON object:
per layout the loss curve, the largest relative loss difference and the
largest absolute difference of params and model state (BatchNorm
statistics) from the reference, each param's partition
spec and per-device shard shape, and XLA's per-device memory figures for the
train step (jit layouts). --num_devices > the machine's devices simulates CPU
devices (it must come before JAX starts, so this script sets it itself).
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from zoo.config import apply_overrides
from zoo.errors import UserError
from zoo.train.loop import build_experiment
from zoo.train.step import compile_steps

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=False)
_LAYOUTS = flags.DEFINE_list('layouts', 'single,data,fsdp,fsdp_tensor,pmap', 'Layouts (first = reference).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Train steps per layout.')
_NUM_DEVICES = flags.DEFINE_integer('num_devices', 0, 'Simulated CPU devices (0: what the machine has).')
_SET = flags.DEFINE_multi_string('set', [], "Config override 'dotted.key=value' (Python literal), repeatable.")
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files.')
flags.mark_flag_as_required('config')

# name -> (mesh axes, strategy, micro-batches); -1 takes the remaining devices.
LAYOUTS = {
    'single': ({'data': 1}, 'jit', 1),
    'data': ({'data': -1}, 'jit', 1),
    'fsdp': ({'fsdp': -1}, 'jit', 1),
    'fsdp_tensor': ({'fsdp': 2, 'tensor': -1}, 'jit', 1),
    'data_tensor': ({'data': 2, 'tensor': -1}, 'jit', 1),
    'pmap': ({'data': -1}, 'pmap', 1),
    'data_accum4': ({'data': -1}, 'jit', 4),
    'fsdp_tensor_accum4': ({'fsdp': 2, 'tensor': -1}, 'jit', 4),
    'pmap_accum4': ({'data': -1}, 'pmap', 4),
}


def run_layout(config, name: str, steps: int, raw_data_dir: str | None) -> dict:
  """Trains `steps` steps of `config` in layout `name`; returns losses, canonical params and facts."""

  axes, strategy_name, microbatches = LAYOUTS[name]
  config = config.copy_and_resolve_references()
  config.mesh.axes, config.mesh.strategy, config.microbatches = axes, strategy_name, microbatches
  config.num_train_steps = steps
  devices = jax.devices()[:1] if name == 'single' else None
  experiment = build_experiment(config, None, raw_data_dir=raw_data_dir, devices=devices)
  strategy = experiment.strategy
  train_step, _ = compile_steps(experiment.task, experiment.tx, experiment.schedule, strategy, config)
  iterator = experiment.pipeline.train_iterator()
  state = strategy.place_state(experiment.state)
  memory = None
  losses = []
  for step in range(steps):
    batch = strategy.put_batch(next(iterator))
    if step == 0 and strategy.axis_name is None:
      analysis = train_step.lower(state, batch).compile().memory_analysis()
      memory = {key: int(getattr(analysis, f'{key}_size_in_bytes'))
                for key in ('argument', 'output', 'temp')} if analysis is not None else None
    state, metrics = train_step(state, batch)
    losses.append(metrics['loss'])
  state = strategy.canonical_state(state)
  params = jax.tree_util.tree_flatten_with_path(state.params)[0]
  layout = {jax.tree_util.keystr(path): {'spec': str(leaf.sharding.spec),
                                          'shard_shape': list(leaf.sharding.shard_shape(leaf.shape))}
            for path, leaf in params}
  variables = jax.tree_util.tree_flatten_with_path({'params': state.params, 'model_state': state.model_state})[0]
  values = {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in variables}
  return {'mesh': dict(experiment.mesh.shape), 'strategy': strategy_name, 'microbatches': microbatches,
          'losses': [float(x) for x in jax.device_get(losses)], 'params': layout, 'memory_per_device': memory,
          '_values': values}


def compare(reference: dict, other: dict) -> dict:
  """Largest relative loss difference and absolute difference of params and model state (BatchNorm
  statistics) of `other` from `reference`."""
  ref_losses, losses = np.asarray(reference['losses']), np.asarray(other['losses'])
  state_diff = max(float(np.abs(reference['_values'][k] - other['_values'][k]).max()) for k in reference['_values'])
  return {'max_rel_loss_diff': float((np.abs(losses - ref_losses) / np.abs(ref_losses)).max()),
          'max_abs_state_diff': state_diff}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = [name for name in _LAYOUTS.value if name not in LAYOUTS]
  if unknown:
    raise app.UsageError(f'Unknown layouts {unknown}; pick from {", ".join(LAYOUTS)}.')
  if _NUM_DEVICES.value:
    jax.config.update('jax_num_cpu_devices', _NUM_DEVICES.value)  # before the first use of a backend
  config = _CONFIG.value
  try:
    apply_overrides(config, _SET.value)
    runs = {name: run_layout(config, name, _STEPS.value, _DATA_DIR.value) for name in _LAYOUTS.value}
  except UserError as error:
    sys.exit(f'error: {error}')
  reference = runs[_LAYOUTS.value[0]]
  for run in runs.values():
    run.update(compare(reference, run))
  for run in runs.values():
    del run['_values']
  print(json.dumps({'devices': jax.device_count(), 'device_kind': jax.devices()[0].device_kind,
                    'steps': _STEPS.value, 'reference': _LAYOUTS.value[0], 'layouts': runs}))


if __name__ == '__main__':
  app.run(main)
