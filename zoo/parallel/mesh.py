"""A device mesh from config, logical-axis rules, and the shardings of params and batches on it.

Mesh axes: 'data' (batch split, params replicated), 'fsdp' (batch split and
params split, gathered per layer by XLA) and 'tensor' (params and activations
split within a layer). Models name their param axes logically ('embed',
'mlp', 'heads', ...); a rules table maps each logical name to mesh axes, in
the style of the Flax lm1b example and MaxText.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from zoo.errors import ConfigError
from zoo.models.layers import BATCH_AXES

MESH_AXES = ('data', 'fsdp', 'tensor')

# Logical param axis -> mesh axis (or axes, or None for replicated). The
# defaults give FSDP on the model dimension ('embed', conv inputs) and Megatron
# style tensor parallelism on the hidden/heads/vocab dimension. An axis that
# is absent from the mesh or does not divide the dimension is not used.
DEFAULT_RULES = (
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('vocab', 'tensor'),
    ('classes', None),
    ('conv_height', None),
    ('conv_width', None),
    ('conv_in', 'fsdp'),
    ('conv_out', 'tensor'),
    ('rnn_hidden', 'fsdp'),
    ('latent', None),
)


def make_mesh(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh over all (global) devices; config.axes maps axis name -> size, one may be -1 ("the rest").

  Axis names are 'data', 'fsdp' and 'tensor'; the default {'data': -1, 'fsdp': 1,
  'tensor': 1} puts every device on the data axis. jax.make_mesh orders the devices by the
  hardware topology (TPU/GPU) so the last axes ('tensor') get the fastest links.
  """
  devices = list(devices if devices is not None else jax.devices())
  names = list(config.axes.keys())
  sizes = list(config.axes.values())
  unknown = [name for name in names if name not in MESH_AXES]
  if unknown:
    raise ConfigError(f'config.mesh.axes has unknown axes {unknown}; use {", ".join(MESH_AXES)}.')
  if sizes.count(-1) > 1:
    raise ConfigError(f'config.mesh.axes {dict(config.axes)}: at most one axis may be -1.')
  if any(size == 0 or size < -1 for size in sizes):
    raise ConfigError(f'config.mesh.axes {dict(config.axes)}: sizes must be positive (or one -1).')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    sizes[sizes.index(-1)] = max(len(devices) // known, 1)
  if int(np.prod(sizes)) != len(devices):
    raise ConfigError(f'config.mesh.axes {dict(config.axes)} needs {int(np.prod(sizes))} devices, '
                      f'but there are {len(devices)}; make the sizes multiply to {len(devices)} or use -1.')
  return jax.make_mesh(tuple(sizes), tuple(names), axis_types=(AxisType.Auto,) * len(names), devices=devices)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes that split the batch: 'data' and 'fsdp' where present."""
  return tuple(axis for axis in BATCH_AXES if axis in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the mesh's batch axes."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a global batch -> global jax.Arrays sharded on the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def rules_table(rules: Sequence[Sequence[Any]] | None) -> dict[str, tuple[str, ...]]:
  """config.mesh.rules (pairs logical name -> mesh axis, axes or None) as a dict; empty -> DEFAULT_RULES."""
  table = {}
  for rule in (rules or DEFAULT_RULES):
    if len(rule) != 2:
      raise ConfigError(f'config.mesh.rules entry {rule!r} is not a pair (logical_axis, mesh_axis).')
    logical, target = rule
    targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    unknown = [axis for axis in targets if axis not in MESH_AXES]
    if unknown:
      raise ConfigError(f'config.mesh.rules maps {logical!r} to unknown mesh axes {unknown}; '
                        f'use {", ".join(MESH_AXES)} or None.')
    table[logical] = targets
  return table


def spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
             table: dict[str, tuple[str, ...]]) -> P:
  """PartitionSpec of one array with logical axis `names` (one per dim) and `shape`.

  Each dim gets its rule's mesh axes that are in the mesh, bigger than 1, not
  used by an earlier dim, and whose total size divides the dim; otherwise it
  is replicated.
  """
  used, spec = set(), []
  for name, size in zip(names, shape):
    axes = tuple(a for a in table.get(name, ()) if a in mesh.axis_names and mesh.shape[a] > 1 and a not in used)
    split = int(np.prod([mesh.shape[a] for a in axes]))
    if not axes or size % split:
      if axes:
        logging.info('Dim %r of size %d does not divide over %s (%d); replicated.', name, size, axes, split)
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return P(*spec)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules: Sequence[Sequence[Any]] | None) -> Any:
  """NamedShardings for a pytree whose leaves may be nn.Partitioned (logical names).

  Unannotated leaves are replicated; the result has the unboxed tree's structure.
  """
  table = rules_table(rules)

  def leaf_sharding(leaf):
    if isinstance(leaf, nn.Partitioned):
      return NamedSharding(mesh, spec_for(leaf.names, leaf.value.shape, mesh, table))
    return NamedSharding(mesh, P())

  return jax.tree.map(leaf_sharding, abstract_boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
