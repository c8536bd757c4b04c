"""Orbax checkpoints holding train state, data-iterator position and config.

A checkpoint is one Orbax step folder with three items: `state` (the
TrainState, rng and step included), `data` (the grain iterator position) and
`config` (the resolved config, JSON). Metrics given at save time go into the
step's metadata, readable without loading arrays. A checkpoint that cannot be
restored is moved aside into `checkpoints_quarantine/`, never deleted, and the
previous one is used.

All Orbax calls run on one low-priority I/O thread (see _lower_thread_priority),
so the threads an async save starts take CPU only when the train step leaves some.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import logging as std_logging
import os
import pathlib
import shutil
import sys
import threading
from typing import Any, Mapping

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization
from orbax.checkpoint import checkpoint_managers
from orbax.checkpoint._src import asyncio_utils

from zoo.errors import CheckpointMismatchError

# Config sections that decide the shapes and meaning of the saved state.
STATE_DEFINING_SECTIONS = ('model', 'task')
TMP_MARKER = '.orbax-checkpoint-tmp'


def _run_sync_finishing_tasks(coro):
  """Orbax's asyncio_utils._run_sync_via_new_loop, except that when `coro` raises, the tasks it started are
  awaited before the loop closes.

  Why: Orbax (0.12.8) closes the loop with them still pending. When a restore fails on a damaged file, the
  sibling reads go on in TensorStore's threads and, finishing, call back into the closed loop: the sporadic
  'RuntimeError: Event loop is closed' traceback after a checkpoint fallback. Waiting costs the rest of
  those reads, as a successful restore would.
  """
  loop = asyncio.new_event_loop()
  try:
    asyncio.set_event_loop(loop)
    try:
      return loop.run_until_complete(coro)
    except BaseException:
      pending = _pending_tasks(loop)
      if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
      raise
  finally:
    asyncio.set_event_loop(None)
    loop.close()


def _pending_tasks(loop: asyncio.AbstractEventLoop) -> list:
  for _ in range(5):  # asyncio's task set is shared by threads: a concurrent change ends an iteration early
    try:
      return [task for task in asyncio.all_tasks(loop) if not task.done()]
    except RuntimeError:
      continue
  return []


_ORBAX_RUN_SYNC = getattr(asyncio_utils, '_run_sync_via_new_loop', None)
if _ORBAX_RUN_SYNC is not None:
  asyncio_utils._run_sync_via_new_loop = _run_sync_finishing_tasks


class _KnownDamage(std_logging.Filter):
  """Drops Orbax's log records about files zoo has already reported in one line (a damaged step metadata file)."""

  def __init__(self):
    super().__init__()
    self.paths: set[str] = set()

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not any(path in record.getMessage() for path in self.paths)


_KNOWN_DAMAGE = _KnownDamage()
std_logging.getLogger('absl').addFilter(_KNOWN_DAMAGE)


def _lower_thread_priority() -> None:
  """Gives this thread, and every thread it starts, the lowest CPU priority (Linux: nice is per thread).

  What it buys: on a CPU host the train step keeps all cores busy, and an async
  Orbax save's threads (TensorStore writes, Python bookkeeping) competing at
  equal priority slowed the steps they overlapped by ~50% (mnist_cnn, 2 cores).
  At nice 19 they run in the step's gaps; see experiments/checkpoint_overhead.py.
  """
  if sys.platform.startswith('linux'):
    try:
      os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:  # not permitted here: keep the default priority
      pass


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """The handler of the `state` item: Orbax's PyTree handler without zstd compression.

  What it buys: compressing float params and optimizer moments saved 6% of
  disk (mnist_cnn: 6.2 vs 6.6 MB) and cost ~10 of the ~65 ms of CPU that an
  async save of that state takes from the train step.
  Checkpoints saved compressed still restore.
  """
  return ocp.PyTreeCheckpointHandler(use_compression=False)


def _item_handlers() -> dict:
  """The handler of each item a checkpoint holds: the train state, the input pipeline's position, the config."""
  return {'state': _state_handler(), 'data': grain.checkpoint.CheckpointHandler(),
          'config': ocp.JsonCheckpointHandler()}


def _state_restore_args(target: Any) -> ocp.args.PyTreeRestore:
  """Restore arguments for the `state` item onto `target`'s shapes, dtypes and shardings."""
  return ocp.args.PyTreeRestore(target, ocp.checkpoint_utils.construct_restore_args(target))


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def _leaf_shapes(tree: Any, prefix: str = '') -> dict[str, tuple[int, ...]]:
  """{'a/b/c': shape} for a nested mapping/sequence of arrays or array metadata."""
  if hasattr(tree, 'keys'):
    items = ((str(k), tree[k]) for k in tree.keys())
  elif isinstance(tree, (list, tuple)):
    items = ((str(i), v) for i, v in enumerate(tree))
  else:
    return {prefix.rstrip('/'): tuple(getattr(tree, 'shape', ()))}
  out = {}
  for key, value in items:
    out.update(_leaf_shapes(value, f'{prefix}{key}/'))
  return out


# Keys that decide how a run is watched, stored or laid out on devices, not what it trains: free to change on
# resume. num_epochs/num_train_steps may change too (a new phase of the run, see Checkpointer.check_continuation).
UNTRAINED_KEYS = ('log_every', 'eval_every', 'eval_every_epochs', 'checkpoint.', 'mesh.', 'cpu_', 'data.tfds_dir',
                  'data.tsv_dir', 'data.num_threads', 'data.num_workers', 'data.eval_batch_size',
                  'data.cache_in_memory')
PHASE_KEYS = ('num_epochs', 'num_train_steps')


def training_diff(saved: dict, current: dict) -> tuple[list[str], dict[str, list]]:
  """(lines 'key: saved -> current' for keys that change what is trained, {phase key: [saved, current]}).

  Only keys both configs hold are compared: a key the code's defaults gained (or lost) since the run
  started is not a change the user made.
  """
  old, new = _flatten(saved), _flatten(current)
  lines, phase = [], {}
  for key in sorted(set(old) & set(new)):
    if old[key] == new[key] or key.startswith(UNTRAINED_KEYS):
      continue
    if key in PHASE_KEYS:
      phase[key] = [old[key], new[key]]
    else:
      lines.append(f'{key}: {old[key]!r} -> {new[key]!r}')
  return lines, phase


def config_diff(saved: dict, current: dict) -> list[str]:
  """'section.key: saved -> current' for each state-defining key that differs."""
  lines = []
  for section in STATE_DEFINING_SECTIONS:
    old, new = _flatten(saved.get(section, {}), f'{section}.'), _flatten(current.get(section, {}), f'{section}.')
    for key in sorted(set(old) | set(new)):
      if old.get(key, '<unset>') != new.get(key, '<unset>'):
        lines.append(f'{key}: {old.get(key, "<unset>")!r} -> {new.get(key, "<unset>")!r}')
  return lines


class Checkpointer:
  """Saves and restores {state, data iterator, config} under `<workdir>/checkpoints`.

  Saves are asynchronous. Kept: the last `keep` checkpoints, plus the best
  `keep_best` by metric `best_metric` (higher is better when best_mode is
  'max') among those saved with that metric.
  """

  def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, keep_best: int = 0,
               best_metric: str = 'eval_accuracy', best_mode: str = 'max', async_save: bool = True):
    workdir = pathlib.Path(workdir).resolve()
    self.directory = workdir / 'checkpoints'
    self.quarantine_directory = workdir / 'checkpoints_quarantine'
    worst = float('-inf') if best_mode == 'max' else float('inf')
    metric_of = lambda metrics: metrics.get(best_metric, worst)
    policies = [checkpoint_managers.LatestN(n=keep)]
    if keep_best:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=metric_of, reverse=best_mode == 'min', n=keep_best, keep_checkpoints_without_metrics=False))
    self._options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=False,
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=metric_of, best_mode=best_mode)  # best_fn also makes Orbax write the metrics
    self._quarantine_unfinished_saves()
    self._report_unreadable_metadata()
    self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='zoo-checkpoint-io',
                                                     initializer=_lower_thread_priority)
    self.manager = self._on_io_thread(ocp.CheckpointManager, self.directory, options=self._options,
                                      item_handlers=_item_handlers())

  def _on_io_thread(self, function, *args, **kwargs):
    """function(*args, **kwargs) run on the low-priority I/O thread; waits for it and re-raises its errors."""
    return self._io.submit(function, *args, **kwargs).result()

  def _quarantine_unfinished_saves(self) -> None:
    """Moves aside temporary folders that a crash in the middle of a save left behind."""
    if jax.process_index() != 0 or not self.directory.exists():
      return
    for path in self.directory.iterdir():
      if TMP_MARKER in path.name:
        self._move_aside(path, 'a save that never finished')

  def _report_unreadable_metadata(self) -> None:
    """A step whose _CHECKPOINT_METADATA (Orbax's bookkeeping: save times, metrics) does not parse is still
    restored, since its items are intact, with one warning; its saved metrics (for keep_best) are lost."""
    if not self.directory.exists():
      return
    for path in sorted(self.directory.glob('*/_CHECKPOINT_METADATA')):
      try:
        json.loads(path.read_text())
      except (ValueError, OSError) as error:
        _KNOWN_DAMAGE.paths.add(str(path))
        if jax.process_index() == 0:
          print(f'warning: {path} is unreadable ({type(error).__name__}); checkpoint {path.parent.name} is used '
                'without it (its state, data position and config are intact; its saved metrics are not). '
                'Nothing was changed.', file=sys.stderr, flush=True)

  def _move_aside(self, path: pathlib.Path, reason: str) -> pathlib.Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%f')
    target = self.quarantine_directory / f'{path.name}.{stamp}'
    self.quarantine_directory.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(target))
    logging.warning('Moved %s (%s) to %s', path, reason, target)
    print(f'warning: checkpoint {path} is unusable ({reason}); moved it to {target}')
    return target

  def quarantine(self, step: int, reason: str) -> pathlib.Path:
    """Moves checkpoint `step` aside (never deletes it) and forgets it."""
    target = None
    if jax.process_index() == 0:
      target = self._move_aside(self.directory / str(step), reason)
    self._on_io_thread(self.manager.reload)
    return target

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def saved_config(self, step: int) -> dict:
    return self._on_io_thread(self.manager.restore, step,
                              args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

  def metrics(self, step: int) -> Mapping[str, float] | None:
    """The metrics saved with checkpoint `step` (no arrays are read)."""
    return self.manager.metrics(step)

  def check_compatible(self, config: dict) -> None:
    """Raises CheckpointMismatchError if the newest readable checkpoint was made by another model/task."""
    for step in reversed(self.all_steps()):
      try:
        saved = self.saved_config(step)
      except Exception:  # unreadable: restore_latest() will move it aside
        continue
      diff = config_diff(saved, config)
      if diff:
        raise CheckpointMismatchError(
            f'{self.directory} holds a checkpoint (step {step}) of a different model/task: ' + '; '.join(diff)
            + '. Fix: pass a new --workdir to start fresh (nothing in the old one was changed), '
            'or restore the old config.')
      return

  def check_continuation(self, config: dict, total_steps: int) -> dict[str, list]:
    """Before resuming: raises CheckpointMismatchError if `config` changes what the newest readable checkpoint
    was trained with (the diff, one line); returns the changed num_epochs/num_train_steps ({} if none), which
    may change while the run is not past the new end."""
    for step in reversed(self.all_steps()):
      try:
        saved = self.saved_config(step)
      except Exception:  # unreadable: restore_latest() will move it aside
        continue
      diff, phase = training_diff(saved, config)
      if diff:
        raise CheckpointMismatchError(
            f'{self.directory} holds a run trained (to step {step}) with another config: ' + '; '.join(diff)
            + '. Fix: pass a new --workdir for the new config (nothing in this one was changed), or rerun with '
            'the run\'s own config (its config.json); only num_epochs/num_train_steps may change.')
      if phase and total_steps < step:
        raise CheckpointMismatchError(
            f'{self.directory} holds a run trained to step {step}; the new config gives {total_steps} steps in all '
            f'({", ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in phase.items())}). Fix: give at least {step} '
            'steps, or pass a new --workdir.')
      return phase
    return {}

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator, config: dict,
           metrics: Mapping[str, float] | None = None) -> None:
    """Starts an async save of the state, iterator position and config at `step`."""
    self._on_io_thread(self.manager.save, step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config)), metrics=dict(metrics or {}))

  def param_shape_diff(self, step: int, abstract_state: Any) -> list[str]:
    """'path: saved shape -> expected shape' for every param (or, without params, leaf) that differs.

    Reads only metadata; raises if the checkpoint's metadata is unreadable.
    """
    saved = self._on_io_thread(self.manager.item_metadata, step)['state']
    expected = serialization.to_state_dict(abstract_state)
    if 'params' in expected:
      saved, expected = saved['params'], expected['params']
    saved, expected = _leaf_shapes(saved), _leaf_shapes(expected)
    shape = lambda tree, key: tree.get(key, '<absent>')
    return [f'{key}: {shape(saved, key)} -> {shape(expected, key)}'
            for key in sorted(set(saved) | set(expected)) if shape(saved, key) != shape(expected, key)]

  def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator) -> Any:
    """Restores the state (onto `abstract_state`'s shardings) and the iterator in place.

    Raises CheckpointMismatchError when the saved params have other shapes.
    """
    diff = self.param_shape_diff(step, abstract_state)
    if diff:
      raise CheckpointMismatchError(
          f'Checkpoint {self.directory / str(step)} holds params of other shapes: {"; ".join(diff[:5])}. '
          'Fix: pass a new --workdir to start fresh (nothing in the old one was changed), or use the '
          'data and model it was trained with.')
    restored = self._on_io_thread(self.manager.restore, step, args=ocp.args.Composite(
        state=_state_restore_args(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored.state

  def restore_latest(self, abstract_state: Any, data_iterator: grain.DatasetIterator) -> tuple[int, Any]:
    """(step, state) of the newest checkpoint that restores, or (0, None) when none does.

    Checkpoints that fail (truncated or missing files, missing items) are
    moved aside, newest first, until one restores.
    """
    for step in reversed(self.all_steps()):
      try:
        return step, self.restore(step, abstract_state, data_iterator)
      except CheckpointMismatchError:
        raise
      except Exception as error:  # Orbax/TensorStore raise many kinds for damaged files
        self.quarantine(step, f'{type(error).__name__}: {" ".join(str(error).split())[:200]}')
    return 0, None

  def wait(self) -> None:
    """Blocks until in-flight saves are on disk."""
    self._on_io_thread(self.manager.wait_until_finished)

  def close(self) -> None:
    """Waits for in-flight saves, then releases the manager and the I/O thread."""
    self._on_io_thread(self.manager.wait_until_finished)
    self._on_io_thread(self.manager.close)
    self._io.shutdown()


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays, for restoring."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def load_state(workdir: str | pathlib.Path, step: int | None = None) -> Any:
  """The train state saved in a run folder (latest checkpoint by default), as numpy arrays.

  Needs no model code: the tree comes from the checkpoint's own metadata. Works
  on any device count (the run may have been saved from a mesh of many).
  """
  # All items' handlers, though only the state is read: Orbax warns of any item it has no handler for.
  manager = ocp.CheckpointManager(pathlib.Path(workdir).resolve() / 'checkpoints', item_handlers=_item_handlers())
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints.')
  # Onto this process's first device, whatever mesh the run was saved from.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=device),
                        manager.item_metadata(step)['state'])
  restored = manager.restore(step, args=ocp.args.Composite(state=_state_restore_args(target)))
  manager.close()
  return jax.tree.map(np.asarray, restored.state)
