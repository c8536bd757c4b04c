"""config.init_from: a new run starts from published weights or from another run's variables.

The params and BatchNorm statistics are loaded, the optimizer starts fresh. Leaves of the output layer
whose shapes differ (a head for another class count) keep their fresh initialisation and are listed in one
printed line; any other difference is an error naming the leaves. Encoder blocks convert between the unscanned
(EncoderBlock_0, EncoderBlock_1, ...) and scanned (one stacked entry) layouts, so a published unscanned model
fine-tunes with scan_layers=True and back.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import optax

from zoo.errors import ConfigError
from zoo.models.layers import stack_layers, unstack_layers
from zoo.models.transformer import SCANNED_BLOCKS
from zoo.train import run_folder, weights
from zoo.train.state import TrainState


def source_variables(init_from: str) -> dict[str, Any]:
  """{'params': ..., **model_state} (numpy) of a run folder, a weights folder or a published name."""
  path = pathlib.Path(init_from)
  if (path / 'config.json').is_file():
    return run_folder.evaluation_variables(run_folder.latest_state(path, role='config.init_from'))
  if path.is_dir() and not (path / weights.MANIFEST).is_file():
    raise ConfigError(f'config.init_from={init_from} is a folder with neither config.json (a run) nor '
                      f'{weights.MANIFEST} (weights); pass a run folder, a weights folder or a published name.')
  return weights.published_variables(init_from)[1]


def in_layout_of(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
  """`source` (one variable collection) with its encoder blocks stacked or unstacked as `target` holds them."""
  block = 'EncoderBlock_'
  if SCANNED_BLOCKS in target and f'{block}0' in source:
    return stack_layers(source, block, SCANNED_BLOCKS)
  if f'{block}0' in target and SCANNED_BLOCKS in source:
    return unstack_layers(source, block, SCANNED_BLOCKS)
  return source


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {'/'.join(str(k.key) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def initialise(state: TrainState, init_from: str, tx: optax.GradientTransformation, shardings: TrainState,
               log=print) -> TrainState:
  """`state` (fresh, canonical layout) with params and model state from `init_from` and a fresh optimizer state.

  `log` receives the one line listing re-initialised leaves (where any are).
  """
  fresh = {'params': state.params, **state.model_state}
  source = source_variables(init_from)
  source = {name: in_layout_of(collection, fresh.get(name, {})) for name, collection in source.items()}
  expected, loaded = _shapes(fresh), weights.flatten(source)
  head = f'params/{list(state.params)[-1]}/'  # the output layer: the module the model creates last
  differing = sorted(k for k in set(expected) & set(loaded) if tuple(loaded[k].shape) != expected[k])
  problems = [f'{k} missing' for k in sorted(set(expected) - set(loaded))]
  problems += [f'{k} not in this model' for k in sorted(set(loaded) - set(expected))]
  problems += [f'{k} {tuple(loaded[k].shape)} vs {expected[k]}' for k in differing if not k.startswith(head)]
  if problems:
    raise ConfigError(f'config.init_from={init_from} does not fit this model ({"; ".join(problems)}); only the '
                      f'output layer ({head[7:-1]}) may differ. Fix: make config.model match the source\'s.')
  if differing:
    log(f'init_from={init_from}: re-initialised {len(differing)} leaves whose shapes differ: ' +
        ', '.join(f'{k} {tuple(loaded[k].shape)} -> {expected[k]}' for k in differing))
  merged = jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf if (key := '/'.join(str(k.key) for k in path)) in differing else loaded[key], fresh)
  params = jax.device_put(merged.pop('params'), shardings.params)
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  return state.replace(params=params, model_state=jax.device_put(merged, shardings.model_state), opt_state=opt_state)
