r"""Seeded benchmarks of zoo train steps: speed, FLOPs, memory, input pipeline, determinism fingerprint.

  python experiments/benchmark.py --suite=zoo --out=benchmarks/cpu.jsonl
  python experiments/benchmark.py --config=experiments/configs/mnist_cnn.py --steps=100 --twin
  python experiments/benchmark.py --suite=zoo --compare=benchmarks/cpu.jsonl   # flags regressions

For each config it builds the experiment exactly as the training launcher does
(same data pipeline, model, optimizer, shardings, compiler options), takes the
seeded pipeline's first warmup+steps batches onto the devices, and times each
train step (host waits for the result, warm-up excluded). With --twin, the
PyTorch eager twin of the model (experiments/torch_twins.py) is timed in the
same process, interleaved in blocks with the zoo step, so that drifts in the
machine's speed hit both alike. Prints one JSON object per config. A suite runs
each config in a process of its own, with that config's host-memory settings
(zoo.train.host_memory), as the training launcher would.
"""

from __future__ import annotations

import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import jax
from absl import app, flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'experiments'))

from zoo import benchmarking  # pylint: disable=wrong-import-position
from zoo.config import apply_overrides  # pylint: disable=wrong-import-position
from zoo.errors import UserError  # pylint: disable=wrong-import-position
from zoo.train.host_memory import prepare_host_malloc  # pylint: disable=wrong-import-position
from zoo.train.loop import build_experiment  # pylint: disable=wrong-import-position
from zoo.train.step import compile_steps  # pylint: disable=wrong-import-position

SUITES = {
    'zoo': ['mnist_mlp', 'mnist_cnn', 'sst2_lstm', 'sst2_transformer', 'binarized_mnist_vae',
            'fashion_mnist_resnet', 'shakespeare_lstm', 'shakespeare_transformer'],
}
SEQUENCE_MODELS = ('rnn_classifier', 'rnn_lm', 'transformer')
TWIN_BLOCK = 10  # zoo and twin steps alternate in blocks of this many
REGRESSION = 1.10  # step time ratio above which --compare flags a regression
PASSED_TO_EACH_CONFIG = ('set', 'steps', 'warmup', 'seed', 'twin', 'pipeline_batches', 'data_dir')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'One config file (overrides with --config.x=y).')
_SUITE = flags.DEFINE_enum('suite', None, list(SUITES), 'A named set of experiments/configs instead of --config.')
_SET = flags.DEFINE_multi_string('set', [], 'key=value overrides (Python literals) for every config of the run.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed train steps per config.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Untimed steps after compilation.')
_SEED = flags.DEFINE_integer('seed', 0, 'config.seed for every config.')
_TWIN = flags.DEFINE_bool('twin', False, 'Also time the PyTorch eager twin (needs requirements-bench.txt).')
_PIPELINE_BATCHES = flags.DEFINE_integer('pipeline_batches', 50, 'Batches drawn to time the input pipeline.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files (default: the search path).')
_OUT = flags.DEFINE_string('out', None, 'Append the JSON lines to this history file.')
_COMPARE = flags.DEFINE_string('compare', None, 'A previous JSON-lines file: report step-time ratios.')


def _configs():
  if _SUITE.value:
    loader = flags.FLAGS['config'].parser
    return [(name, loader.parse(str(REPO / 'experiments' / 'configs' / f'{name}.py')))
            for name in SUITES[_SUITE.value]]
  if _CONFIG.value is None:
    raise app.UsageError('Pass --config=experiments/configs/NAME.py or --suite=zoo.')
  return [(pathlib.Path(flags.FLAGS['config'].config_filename).stem, _CONFIG.value)]


def _benchmark_in_own_process(name: str) -> dict:
  """The record of suite config `name`, benchmarked by this script in a child process."""
  command = [sys.executable, __file__, f'--config={REPO / "experiments" / "configs" / f"{name}.py"}']
  for flag in PASSED_TO_EACH_CONFIG:
    if flags.FLAGS[flag].value is not None:
      command += flags.FLAGS[flag].serialize().splitlines()
  child = subprocess.run(command, capture_output=True, text=True, check=False)
  if child.returncode:
    raise app.UsageError(f'{name}: the benchmark failed:\n{child.stderr[-3000:]}')
  return json.loads([line for line in child.stdout.splitlines() if line.startswith('{')][-1])


def _time_pipeline(pipeline, count: int) -> float:
  """Batches per second drawn from a fresh train iterator (first batch excluded)."""
  iterator = pipeline.train_iterator()
  next(iterator)
  started = time.perf_counter()
  for _ in range(count):
    next(iterator)
  return count / (time.perf_counter() - started)


def _twin_step(config, batch):
  if not _TWIN.value:
    return None, {}
  import torch_twins  # pylint: disable=import-outside-toplevel
  try:
    return torch_twins.build_step(config, jax.device_get(batch), _SEED.value)
  except NotImplementedError as error:
    return None, {'twin': str(error)}


def benchmark(name: str, config) -> dict:
  """One config's JSON record (config with --seed and --set applied)."""
  with tempfile.TemporaryDirectory() as workdir:
    experiment = build_experiment(config, pathlib.Path(workdir), raw_data_dir=_DATA_DIR.value)
  pipeline, strategy = experiment.pipeline, experiment.strategy
  if strategy.axis_name is not None:
    raise app.UsageError('benchmark.py measures the jit strategy (it reads XLA\'s cost analysis of one program); '
                         'drop --set mesh.strategy=pmap.')
  train_step, _ = compile_steps(experiment.task, experiment.tx, experiment.schedule, strategy, config)
  iterator = pipeline.train_iterator()
  batches = [strategy.put_batch(next(iterator)) for _ in range(_WARMUP.value + _STEPS.value)]
  state = strategy.place_state(experiment.state)
  started = time.perf_counter()
  compiled = train_step.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - started
  costs = benchmarking.compiled_costs(compiled)

  def zoo_step(batch):
    nonlocal state
    state, metrics = compiled(state, batch)
    return metrics['loss']

  twin, twin_info = _twin_step(config, batches[0])
  for batch in batches[:_WARMUP.value]:
    benchmarking.time_call(lambda batch=batch: zoo_step(batch))
    if twin:
      twin()
  zoo_times, twin_times, block = [], [], TWIN_BLOCK
  timed = batches[_WARMUP.value:]
  for start in range(0, len(timed), block):
    zoo_times += [benchmarking.time_call(lambda batch=batch: zoo_step(batch)) for batch in timed[start:start + block]]
    if twin:
      twin_times += [benchmarking.time_call(twin) for _ in timed[start:start + block]]

  step_ms = benchmarking.summarize_ms(zoo_times)
  batch_size = config.data.batch_size
  example = pipeline.example_batch()[experiment.task.input_key]
  record = {
      'config': name, 'model': config.model.name, 'seed': config.seed, 'batch_size': batch_size,
      'steps': _STEPS.value, 'warmup': _WARMUP.value, 'compile_s': round(compile_s, 2), 'step_ms': step_ms,
      'examples_per_s': round(batch_size / (step_ms['median'] / 1e3), 1),
  }
  if config.model.name in SEQUENCE_MODELS:
    record['tokens_per_s'] = round(batch_size * example.shape[1] / (step_ms['median'] / 1e3), 1)
  record.update(costs)
  device = jax.devices()[0]
  dtype = config.get('compute_dtype', 'float32')
  peak = benchmarking.peak_flops(device.device_kind, dtype)
  achieved = costs['flops_per_step'] / (step_ms['median'] / 1e3) / jax.device_count() \
      if costs['flops_per_step'] else None
  record['flops_per_s_per_device'] = achieved
  record['mfu'] = round(achieved / peak, 4) if achieved and peak else None
  pipeline_rate = _time_pipeline(pipeline, _PIPELINE_BATCHES.value)
  record['pipeline'] = {'batches_per_s': round(pipeline_rate, 1),
                        'times_step_consumption': round(pipeline_rate * step_ms['median'] / 1e3, 1)}
  record['params_hash'] = benchmarking.params_fingerprint(state.params)
  if twin:
    twin_ms = benchmarking.summarize_ms(twin_times)
    record['torch'] = dict(twin_info, step_ms=twin_ms, speedup=round(twin_ms['median'] / step_ms['median'], 3),
                           speedup_by_block=benchmarking.blockwise_ratios(twin_times, zoo_times, TWIN_BLOCK))
  elif twin_info:
    record['torch'] = twin_info
  record.update({
      'backend': jax.default_backend(), 'device_kind': device.device_kind, 'device_count': jax.device_count(),
      'process_count': jax.process_count(), 'compute_dtype': dtype, 'jax': jax.__version__,
      'python': platform.python_version(), 'cpu_compiler_options': dict(config.get('cpu_compiler_options', {})),
      'set': _SET.value, 'date': time.strftime('%Y-%m-%d %H:%M:%S'),
  })
  return record


def compare(records: list[dict], previous_path: str) -> list[dict]:
  """Step-time ratio new/old per config against the newest earlier record of the same config and device."""
  previous = {}
  for line in pathlib.Path(previous_path).read_text().splitlines():
    if line.strip():
      row = json.loads(line)
      previous[row['config'], row['device_kind'], row['device_count']] = row
  report = []
  for record in records:
    old = previous.get((record['config'], record['device_kind'], record['device_count']))
    if old is None:
      continue
    ratio = record['step_ms']['median'] / old['step_ms']['median']
    report.append({'compare': record['config'], 'step_ms_ratio': round(ratio, 3), 'regression': ratio > REGRESSION,
                   'same_params_hash': record['params_hash'] == old['params_hash']})
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  records = []
  configs = _configs()
  for name, config in configs:
    if len(configs) > 1:
      record = _benchmark_in_own_process(name)
    else:
      try:
        config.seed = _SEED.value
        apply_overrides(config, _SET.value)
        prepare_host_malloc(config)  # before JAX starts its threads
        record = benchmark(name, config)
      except UserError as error:
        raise app.UsageError(f'{name}: {error}') from error
    print(json.dumps(record), flush=True)
    records.append(record)
  if _COMPARE.value:
    for row in compare(records, _COMPARE.value):
      print(json.dumps(row), flush=True)
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open('a') as file:
      file.writelines(json.dumps(record) + '\n' for record in records)


if __name__ == '__main__':
  app.run(main)
