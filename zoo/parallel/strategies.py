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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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
    train = jax.jit(self._under_mesh(train_fn), in_shardings=(self.state_shardings, batch),
                    out_shardings=(self.state_shardings, None), donate_argnums=0, compiler_options=compiler_options)
    evaluate = jax.jit(self._under_mesh(eval_fn), in_shardings=(self.state_shardings, batch),
                       compiler_options=compiler_options)
    return train, evaluate

  def _under_mesh(self, fn: Callable) -> Callable:
    """fn traced under the mesh, so the models' activation constraints (zoo.models.layers.constrain_batch) see it."""
    def traced(*args):
      with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
        return fn(*args)
    return traced

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

  def compile(self, train_fn: Callable, eval_fn: Callable,
              compiler_options: dict[str, str] | None = None) -> tuple[Callable, Callable]:
    """pmapped (train, eval); metrics and eval sums come back as one value (pmean'd / psum'd over devices)."""
    del compiler_options  # pmap takes none; the CPU options only speed up, never change, results
    train = jax.pmap(train_fn, axis_name=PMAP_AXIS, devices=self.devices, donate_argnums=0)
    evaluate = jax.pmap(lambda state, batch: jax.lax.psum(eval_fn(state, batch), PMAP_AXIS),
                        axis_name=PMAP_AXIS, devices=self.devices)
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # every device holds the same value

    def train_and_unstack(state, batch):
      state, metrics = train(state, batch)
      return state, first(metrics)

    return train_and_unstack, lambda state, batch: first(evaluate(state, batch))

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
    """Stacked replicas -> one global array per leaf with the canonical (replicated) shardings.

    Built from each local device's own replica, so no data moves between
    devices or processes (with several processes, pmap's outputs are local arrays).
    """
    def unstack(stacked: jax.Array, sharding: NamedSharding) -> jax.Array:
      replicas = {shard.device: shard.data[0] for shard in stacked.addressable_shards}
      return jax.make_array_from_single_device_arrays(
          stacked.shape[1:], sharding, [replicas[device] for device in sharding.addressable_devices])

    return jax.tree.map(unstack, state, self.state_shardings)


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
