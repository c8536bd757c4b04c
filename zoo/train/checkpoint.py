"""Orbax checkpoints holding train state, data-iterator position and config."""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from zoo.errors import CheckpointMismatchError

# Config sections that decide the shapes and meaning of the saved state.
STATE_DEFINING_SECTIONS = ('model', 'task')


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


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

  Saves are asynchronous; the last `keep` checkpoints are kept.
  """

  def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, async_save: bool = True):
    self.directory = pathlib.Path(workdir).resolve() / 'checkpoints'
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def check_compatible(self, config: dict) -> None:
    """Raises CheckpointMismatchError if the latest checkpoint was made by another model/task."""
    step = self.latest_step()
    if step is None:
      return
    saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    diff = config_diff(saved, config)
    if diff:
      raise CheckpointMismatchError(
          f'{self.directory} holds a checkpoint (step {step}) of a different model/task: ' + '; '.join(diff)
          + '. Fix: pass a new --workdir to start fresh (nothing in the old one was changed), '
          'or restore the old config.')

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator, config: dict) -> None:
    """Starts an async save of the state, iterator position and config at `step`."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config)))

  def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator) -> Any:
    """Restores the state (onto `abstract_state`'s shardings) and the iterator in place."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored.state

  def close(self) -> None:
    """Waits for in-flight saves, then releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays, for restoring."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
