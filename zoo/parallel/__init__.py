"""Meshes, logical-axis rules and shardings."""

from zoo.parallel.mesh import batch_sharding, logical_shardings, make_mesh, shard_batch

__all__ = ['batch_sharding', 'logical_shardings', 'make_mesh', 'shard_batch']
