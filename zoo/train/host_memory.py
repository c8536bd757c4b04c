"""Host memory setting for CPU training: XLA's large step buffers reused from the heap, not mapped anew.

glibc serves a malloc above its mmap threshold (128 KiB, adaptive up to
32 MiB) with a fresh mmap and unmaps it on free. XLA CPU allocates a step's
temporaries on every execution (52 MB for the MNIST CNN at batch 128), so each
step page-faults and zero-fills all of them again: about a third of the CNN's
step time on 2 cores (45 -> 28 ms, benchmarks/README.md). With mmap off for
malloc and a high trim threshold, freed buffers stay in the heap and the next
step reuses them. Cost: up to `trim_threshold_bytes` of freed memory stays
with the process instead of going back to the OS.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from absl import logging

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def reuse_freed_host_memory(trim_threshold_bytes: int = 1 << 30) -> bool:
  """Makes glibc malloc keep large freed blocks for reuse (process-wide); False where not glibc."""
  name = ctypes.util.find_library('c')
  try:
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):
    logging.info('No glibc mallopt here (%s); host allocations stay as they are.', name)
    return False
  return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold_bytes))
