"""How a step function runs on many devices: `jit` over sharded arrays, or `pmap` over replicas.

Both take the same step functions `train(state, batch) -> (state, metrics)`
and `eval(state, batch) -> sums`, and the same canonical state (global
arrays with the mesh's NamedShardings, as created and checkpointed). The
loop talks only to a Strategy:

  state = strategy.place_state(state)            # canonical -> strategy layout
  state, metrics = train(state, strategy.put_batch(local_batch))
  checkpoint(strategy.canonical_state(state))    # strategy layout -> canonical
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zoo.errors import ConfigError
from zoo.parallel.mesh import batch_sharding, shard_batch

STRATEGIES = ('jit', 'pmap')
PMAP_AXIS = 'batch'


class JitStrategy:
  """One jit-compiled program over global arrays; GSPMD inserts the collectives (default).

  Data, FSDP and tensor parallelism all come from the shardings of the state
  (logical-axis rules) and of the batch (split over 'data' and 'fsdp').
  """
  axis_name = None

  def __init__(self, mesh: Mesh, state_shardings: Any):
    self.mesh, self.state_shardings = mesh, state_shardings

  def compile(self, train_fn: Callable, eval_fn: Callable,
              compiler_options: dict[str, str] | None = None) -> tuple[Callable, Callable]:
    """jit-compiled (train, eval); the train state is donated and stays sharded."""
    batch = batch_sharding(self.mesh)
    train = jax.jit(train_fn, in_shardings=(self.state_shardings, batch), out_shardings=(self.state_shardings, None),
                    donate_argnums=0, compiler_options=compiler_options)
    evaluate = jax.jit(eval_fn, in_shardings=(self.state_shardings, batch), compiler_options=compiler_options)
    return train, evaluate

  def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows [B/P, ...] -> a global batch [B, ...] split over the batch axes."""
    return shard_batch(local_batch, self.mesh)

  def place_state(self, state: Any) -> Any:
    return state

  def canonical_state(self, state: Any) -> Any:
    return state


class PmapStrategy:
  """jax.pmap over every device: replicated state, per-device batches, gradients averaged by lax.pmean.

  The state is stacked on a leading device axis; BatchNorm layers average
  their batch statistics over PMAP_AXIS (the loop sets the model's
  batch_norm_axis_name). The mesh must be data-only (see check()).
  """
  axis_name = PMAP_AXIS

  def __init__(self, mesh: Mesh, state_shardings: Any):
    self.mesh, self.state_shardings = mesh, state_shardings
    self.devices = list(mesh.devices.flat)
    self.replica_mesh = Mesh(np.asarray(self.devices), (PMAP_AXIS,))
    self.stacked = NamedSharding(self.replica_mesh, P(PMAP_AXIS))
    count = len(self.devices)
    self._stack = jax.jit(lambda state: jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *x.shape)), state),
                          out_shardings=self.stacked)
    self._first = jax.jit(lambda state: jax.tree.map(lambda x: x[0], state), out_shardings=state_shardings)

  def compile(self, train_fn: Callable, eval_fn: Callable,
              compiler_options: dict[str, str] | None = None) -> tuple[Callable, Callable]:
    """pmapped (train, eval); metrics come back as one value (they are pmean'd), eval sums summed."""
    del compiler_options  # pmap takes none; the CPU options only speed up, never change, results
    train = jax.pmap(train_fn, axis_name=PMAP_AXIS, devices=self.devices, donate_argnums=0)
    evaluate = jax.pmap(eval_fn, axis_name=PMAP_AXIS, devices=self.devices)

    def train_and_unstack(state, batch):
      state, metrics = train(state, batch)
      return state, jax.tree.map(lambda m: m[0], metrics)

    def eval_and_sum(state, batch):
      return jax.tree.map(lambda s: s.sum(0), evaluate(state, batch))

    return train_and_unstack, eval_and_sum

  def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows [B/P, ...] -> [devices, B/devices, ...], one slice per device."""
    local_devices = len([d for d in self.devices if d.process_index == jax.process_index()])

    def per_device(x):
      if x.shape[0] % local_devices:
        raise ConfigError(f'A batch of {x.shape[0]} rows per process does not split over {local_devices} '
                          f'devices; make the batch size a multiple of {local_devices * jax.process_count()}.')
      x = x.reshape(local_devices, x.shape[0] // local_devices, *x.shape[1:])
      return jax.make_array_from_process_local_data(self.stacked, x)

    return jax.tree.map(per_device, local_batch)

  def place_state(self, state: Any) -> Any:
    """Canonical (replicated) state -> one copy per device, stacked on axis 0."""
    return self._stack(state)

  def canonical_state(self, state: Any) -> Any:
    """Stacked replicas -> the first one, with the canonical (replicated) shardings."""
    return self._first(state)


def check(name: str, mesh: Mesh) -> None:
  """Raises ConfigError unless strategy `name` can run on `mesh`."""
  if name not in STRATEGIES:
    raise ConfigError(f'config.mesh.strategy={name!r}; use one of: {", ".join(STRATEGIES)}.')
  if name == 'pmap' and any(mesh.shape[axis] > 1 for axis in mesh.axis_names if axis != 'data'):
    raise ConfigError(f'config.mesh.strategy="pmap" replicates the params, so the mesh must be data-only; '
                      f'got {dict(mesh.shape)}. Use strategy "jit" for FSDP or tensor parallelism.')


def build(name: str, mesh: Mesh, state_shardings: Any) -> JitStrategy | PmapStrategy:
  """The strategy called `name` ('jit' or 'pmap') on `mesh`; state_shardings: the canonical state's."""
  check(name, mesh)
  return (JitStrategy if name == 'jit' else PmapStrategy)(mesh, state_shardings)
