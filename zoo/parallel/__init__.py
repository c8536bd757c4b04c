"""Meshes, logical-axis rules and shardings; the jit and pmap strategies; multi-process set-up."""

from zoo.parallel import distributed, strategies
from zoo.parallel.mesh import DEFAULT_RULES, batch_sharding, logical_shardings, make_mesh, shard_batch

__all__ = ['DEFAULT_RULES', 'batch_sharding', 'distributed', 'logical_shardings', 'make_mesh', 'shard_batch',
           'strategies']
