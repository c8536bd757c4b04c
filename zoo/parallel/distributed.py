"""Joining a multi-process (multi-host) run with jax.distributed.

A run spans several processes when the launcher gets --coordinator_address
(or $ZOO_COORDINATOR_ADDRESS) with the process count and this process's id,
or when a cluster that JAX detects by itself launched it (SLURM, Open MPI,
a multi-host TPU slice). Afterwards jax.devices() lists every process's
devices, and the mesh, the data pipeline (each process reads its rows of a
global batch), the writers (process 0 only) and Orbax follow from it.
"""

from __future__ import annotations

import os

import jax

from zoo.errors import ConfigError

ENV_ADDRESS, ENV_COUNT, ENV_ID = 'ZOO_COORDINATOR_ADDRESS', 'ZOO_NUM_PROCESSES', 'ZOO_PROCESS_ID'


def cluster_detected(environ=os.environ) -> str | None:
  """The name of a multi-process cluster environment JAX can initialize from, or None."""
  if int(environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_JOB_ID' in environ:
    return 'SLURM'
  if int(environ.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'Open MPI'
  if len([h for h in environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    return 'multi-host TPU'
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, environ=os.environ) -> bool:
  """Starts jax.distributed if this run spans several processes; returns whether it does.

  Must run before anything touches a JAX backend. Arguments override the
  ZOO_* environment variables; with neither, a detected cluster is used.
  On CPU the cross-process collectives go through gloo.
  """
  address = coordinator_address or environ.get(ENV_ADDRESS)
  if address:
    count = num_processes if num_processes is not None else environ.get(ENV_COUNT)
    index = process_id if process_id is not None else environ.get(ENV_ID)
    if count is None or index is None:
      raise ConfigError(f'A coordinator address ({address}) needs the number of processes and this process\'s id: '
                        f'pass --num_processes and --process_id (or set ${ENV_COUNT} and ${ENV_ID}).')
    count, index = int(count), int(index)
    if not 0 <= index < count:
      raise ConfigError(f'--process_id={index} must be in [0, {count}) for --num_processes={count}.')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(address, num_processes=count, process_id=index)
    return True
  if cluster_detected(environ):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize()
    return True
  return False
