"""Load time and memory of published weights: prints one JSON line per name (default: the largest file).

  python experiments/pretrained_benchmark.py --out=benchmarks/pretrained_load.jsonl

In a fresh process: the first zoo.pretrained.load (sha256 of the file, safetensors read, model built and its
shapes checked) after zoo is imported, then the median of --repeats more loads, and the growth of peak
resident memory over the process's size before the first load (Linux ru_maxrss).
"""

from __future__ import annotations

import json
import resource
import statistics
import time

import jax
from absl import app, flags

import zoo.pretrained
from zoo import benchmarking
from zoo.train.weights import PUBLISHED_DIR

_NAMES = flags.DEFINE_list('names', None, 'Published names (default: the largest file).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Loads after the first, for the median.')
_OUT = flags.DEFINE_string('out', None, 'Append the lines to this file too.')


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str) -> dict:
  before = _peak_rss_mb()
  started = time.perf_counter()
  _, variables, info = zoo.pretrained.load(name)
  jax.block_until_ready(variables)
  first = time.perf_counter() - started
  after_first = _peak_rss_mb()
  times = []
  for _ in range(_REPEATS.value):
    started = time.perf_counter()
    jax.block_until_ready(zoo.pretrained.load(name)[1])
    times.append(time.perf_counter() - started)
  return {'name': name, 'file_bytes': info.file_bytes, 'stored_dtype': info.storage['dtype'], 'params': info.params,
          'first_load_s': round(first, 3), 'load_s_median': round(statistics.median(times), 3),
          'peak_rss_growth_mb_first_load': round(after_first - before, 1),
          'peak_rss_mb': round(_peak_rss_mb(), 1), 'rss_before_mb': round(before, 1)}


def main(argv):
  del argv
  names = _NAMES.value or [max(zoo.pretrained.list(), key=_file_bytes)]
  for name in names:
    record = {**measure(name), **benchmarking.provenance(), 'jax': jax.__version__}
    line = json.dumps(record)
    print(line)
    if _OUT.value:
      with open(_OUT.value, 'a') as out:
        out.write(line + '\n')


def _file_bytes(name: str) -> int:
  manifest = json.loads((PUBLISHED_DIR / 'manifest.json').read_text())
  return manifest['weights'][name]['files']['weights']['bytes']


if __name__ == '__main__':
  app.run(main)
