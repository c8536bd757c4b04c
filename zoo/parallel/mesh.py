"""A device mesh from config, and the shardings of params and batches on it."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zoo.errors import ConfigError

BATCH_AXES = ('data',)


def make_mesh(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh over all (global) devices; config.axes maps axis name -> size, one may be -1.

  The default {'data': -1} puts every device on the data axis.
  """
  devices = list(devices if devices is not None else jax.devices())
  names = list(config.axes.keys())
  sizes = list(config.axes.values())
  if sizes.count(-1) > 1:
    raise ConfigError(f'config.mesh.axes {dict(config.axes)}: at most one axis may be -1.')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ConfigError(f'config.mesh.axes {dict(config.axes)} needs {int(np.prod(sizes))} devices, '
                     f'but there are {len(devices)}; make the sizes multiply to {len(devices)} or use -1.')
  return Mesh(np.asarray(devices).reshape(sizes), names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the mesh's data axes."""
  return NamedSharding(mesh, P(tuple(a for a in BATCH_AXES if a in mesh.axis_names)))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a global batch -> global jax.Arrays sharded on the batch axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
  """Shardings for a pytree whose leaves may be nn.Partitioned (logical names).

  Unannotated leaves are replicated; the result has the unboxed tree's structure.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, list(rules))
