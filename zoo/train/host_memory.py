"""Host memory settings for CPU training: XLA's large step buffers reused from the heap, not mapped anew.

glibc serves a malloc above its mmap threshold (128 KiB, adaptive up to
32 MiB) with a fresh mmap and unmaps it on free. XLA CPU allocates a step's
temporaries on every execution (52 MB for the MNIST CNN at batch 128), so each
step page-faults and zero-fills all of them again: about a third of the CNN's
step time on 2 cores (45 -> 28 ms, benchmarks/README.md). With mmap off for
malloc and a high trim threshold, freed buffers stay in the heap and the next
step reuses them. Cost: up to `trim_threshold_bytes` of freed memory stays
with the process instead of going back to the OS.

That covers the main thread and any buffer up to 64 MiB. XLA allocates from
its worker threads, and glibc gives each thread an arena whose heaps are
capped at 64 MiB: a larger block (the sst2_lstm step's 165 MB, the ResNet's
270 MB) is mapped and unmapped on every step whatever the mmap setting, 40-135
thousand page faults per step. `use_one_malloc_arena` makes every thread
allocate from the main heap instead. It must run before the threads first
allocate, that is before JAX starts its backend (`prepare_host_malloc`, the
launchers' first step). Threads then share one malloc lock, which makes the
small models' steps slower (the CNN's 18 -> 21 ms), so configs ask for it
(`config.cpu_single_malloc_arena`) where their step's buffers exceed 64 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import pkgutil

import jax
import ml_collections
from absl import logging

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def _mallopt():
  """glibc's mallopt, or None where the C library has none."""
  name = ctypes.util.find_library('c')
  try:
    return ctypes.CDLL(name).mallopt
  except (OSError, AttributeError, TypeError):
    logging.info('No glibc mallopt here (%s); host allocations stay as they are.', name)
    return None


def reuse_freed_host_memory(trim_threshold_bytes: int = 1 << 30) -> bool:
  """Makes glibc malloc keep large freed blocks for reuse (process-wide); False where not glibc."""
  mallopt = _mallopt()
  return bool(mallopt and mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, trim_threshold_bytes))


def use_one_malloc_arena() -> bool:
  """Makes threads that have not yet allocated use glibc's main arena (process-wide); False where not glibc."""
  mallopt = _mallopt()
  return bool(mallopt and mallopt(M_ARENA_MAX, 1))


def _accelerator_plugins() -> list[str]:
  """Installed JAX plugins for GPUs/TPUs (entry points, jax_plugins modules, libtpu); found without starting JAX."""
  found = [entry.name for entry in importlib.metadata.entry_points(group='jax_plugins')]
  if importlib.util.find_spec('jax_plugins') is not None:
    import jax_plugins  # pylint: disable=import-outside-toplevel
    found += [module.name for module in pkgutil.iter_modules(jax_plugins.__path__)]
  if importlib.util.find_spec('libtpu') is not None:
    found.append('libtpu')
  return found


def will_run_on_cpu() -> bool:
  """Whether JAX's default backend will be the CPU, judged without starting it (jax_platforms or the plugins)."""
  platforms = jax.config.jax_platforms
  if platforms:
    return platforms.split(',')[0] == 'cpu'
  return not _accelerator_plugins()


def prepare_host_malloc(config: ml_collections.ConfigDict) -> None:
  """Applies config's host-memory settings (cpu_reuse_host_memory, cpu_single_malloc_arena) for a CPU run.

  Call it before anything starts JAX's backend (the launchers do it first).
  """
  if not config.cpu_reuse_host_memory or not will_run_on_cpu():
    return
  if config.cpu_single_malloc_arena:
    use_one_malloc_arena()
  reuse_freed_host_memory()
