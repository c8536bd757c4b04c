"""Helpers for seeded benchmarks: timing statistics, XLA cost and memory figures, MFU and the params fingerprint."""

from __future__ import annotations

import datetime
import hashlib
import os
import pathlib
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

# Dense peak FLOP/s per chip by device kind substring and compute dtype (vendor data sheets,
# without sparsity). CPUs are left out: their peak depends on cores, clocks and ISA.
PEAK_FLOPS = {
    'H200': {'bfloat16': 989e12, 'float32': 67e12},
    'H100': {'bfloat16': 989e12, 'float32': 67e12},
    'A100': {'bfloat16': 312e12, 'float32': 19.5e12},
    'L4': {'bfloat16': 121e12, 'float32': 30e12},
    'TPU v4': {'bfloat16': 275e12},
    'TPU v5 lite': {'bfloat16': 197e12},
    'TPU v5e': {'bfloat16': 197e12},
    'TPU v5p': {'bfloat16': 459e12},
    'TPU v6': {'bfloat16': 918e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Peak FLOP/s of one `device_kind` chip in `dtype`, or None when unknown (CPUs)."""
  for name, peaks in PEAK_FLOPS.items():
    if name.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def cpu_name() -> str:
  """The CPU's model name, shortened: 'AMD EPYC 7B13', 'Intel Xeon' (from /proc/cpuinfo where there is one)."""
  name = platform.processor() or platform.machine()
  cpuinfo = pathlib.Path('/proc/cpuinfo')
  if cpuinfo.exists():
    found = re.search(r'^model name\s*:\s*(.+)$', cpuinfo.read_text(), re.MULTILINE)
    name = found.group(1) if found else name
  name = re.sub(r'\((R|TM)\)|\bCPU\b.*$|\b\d+-Core\b|\bProcessor\b', ' ', name)
  return ' '.join(name.split())


def commit() -> str:
  """The short commit hash of the git checkout holding zoo ('' outside one, e.g. an installed wheel)."""
  try:
    result = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=pathlib.Path(__file__).parent,
                            capture_output=True, text=True)
  except OSError:  # no git
    return ''
  return result.stdout.strip()


def provenance() -> dict[str, str]:
  """What a benchmark record names: {'command': this process's command line, 'machine': 'Intel Xeon, 2 cores',
  'date': today (ISO), 'commit': the checkout's short hash}."""
  return {'command': shlex.join(['python', *sys.argv]), 'machine': f'{cpu_name()}, {os.cpu_count()} cores',
          'date': datetime.date.today().isoformat(), 'commit': commit()}


def write_between_markers(path: pathlib.Path, name: str, text: str) -> None:
  """Replaces what lies between `<!-- NAME:BEGIN -->` and `<!-- NAME:END -->` in the file at `path` with `text`
  (a table a script regenerates inside hand-written documentation)."""
  begin, end = f'<!-- {name}:BEGIN -->', f'<!-- {name}:END -->'
  content = path.read_text()
  head, rest = content.split(begin, 1)
  path.write_text(head + begin + '\n' + text.strip('\n') + '\n' + end + rest.split(end, 1)[1])


def params_fingerprint(params: Any) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes: equal iff the params are bit-identical."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
    leaf = np.asarray(leaf)
    digest.update(f'{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};'.encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _spread(values) -> dict[str, float]:
  """{'median', 'p10', 'p90'} of `values`, rounded to 3 decimals."""
  p10, median, p90 = np.percentile(np.asarray(values), [10, 50, 90])
  return {'median': round(float(median), 3), 'p10': round(float(p10), 3), 'p90': round(float(p90), 3)}


def summarize_ms(seconds: list[float]) -> dict[str, float]:
  """Median and 10th/90th percentiles of durations, in ms."""
  return _spread(np.asarray(seconds) * 1e3)


def blockwise_ratios(numerator: list[float], denominator: list[float], block: int) -> dict[str, float]:
  """Median and 10th/90th percentiles over blocks of median(numerator block) / median(denominator block).

  For two steps timed in alternating blocks of `block` calls (the last block may be shorter): the spread
  says how much the ratio moves as the machine's speed drifts (a ratio of whole-run medians hides it).
  """
  count = min(len(numerator), len(denominator))
  if not count:
    raise ValueError('blockwise_ratios needs timings on both sides.')
  return _spread([np.median(numerator[start:start + block]) / np.median(denominator[start:start + block])
                  for start in range(0, count, block)])


def time_call(function: Callable[[], Any]) -> float:
  """Seconds for function() including waiting for its device results."""
  started = time.perf_counter()
  jax.block_until_ready(function())
  return time.perf_counter() - started


def compiled_costs(compiled) -> dict[str, float | None]:
  """FLOPs per call and peak device memory (bytes) of a compiled XLA executable, where XLA reports them."""
  costs = compiled.cost_analysis()
  costs = costs[0] if isinstance(costs, (list, tuple)) else (costs or {})
  flops = costs.get('flops')
  try:
    memory = compiled.memory_analysis()
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes)
  except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
    peak = None
  return {'flops_per_step': float(flops) if flops else None, 'peak_memory_bytes': peak}
