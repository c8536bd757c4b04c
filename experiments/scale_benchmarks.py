"""Benchmarks of the pod-scale models on this machine's CPU, one JSON line per measurement.

  python experiments/scale_benchmarks.py --what=compile_depth   # compile s of the encoder step at 4/12/24 layers,
                                                                # scanned and unscanned
  python experiments/scale_benchmarks.py --what=cpu_steps       # ResNet-50 and ViT-B/16 train steps at batch 2:
                                                                # step time, XLA flops against the analytic count
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import time

import jax
import numpy as np
from absl import app, flags

from zoo import benchmarking, models, tasks
from zoo.models.flops import forward_flops
from zoo.parallel import make_mesh, strategies
from zoo.train import optim, planning
from zoo.train import state as state_lib
from zoo.train.step import compile_steps

REPO = pathlib.Path(__file__).resolve().parents[1]
_WHAT = flags.DEFINE_enum('what', 'cpu_steps', ['compile_depth', 'cpu_steps'], 'Which benchmark.')
_DEPTHS = flags.DEFINE_list('depths', ['4', '12', '24'], 'Encoder depths for compile_depth.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Images per step for cpu_steps.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps for cpu_steps (after one warm-up).')
_CONFIGS = flags.DEFINE_list('configs', ['imagenet_resnet50', 'imagenet_vit_b16'], 'Configs for cpu_steps.')


def load_config(name: str):
  path = REPO / 'experiments' / 'configs' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def context() -> dict:
  return {**benchmarking.provenance(), 'devices': len(jax.devices())}


def compile_depth() -> None:
  """Compile seconds of sst2_bert_base's train step at d_model 256 on 1 CPU device, by depth and layout."""
  for depth in map(int, _DEPTHS.value):
    for scan in (False, True):
      config = load_config('sst2_bert_base')
      config.model.update(dict(d_model=256, num_heads=4, d_ff=1024, vocab_size=20000, num_layers=depth,
                               scan_layers=scan))
      config.data.batch_size, config.compute_dtype = 8, 'float32'
      result = planning.plan(config, jax.devices()[:1], 'cpu:1')
      print(json.dumps({'benchmark': 'compile_depth', 'model': 'transformer d256', 'layers': depth, 'scan': scan,
                        'compile_s': round(result.compile_s, 2), **context()}), flush=True)


def cpu_steps() -> None:
  """ResNet-50 and ViT-B/16 (f32 on CPU) train steps at 224 px: seconds per step and flops per step.

  Layers unscanned: XLA's cost analysis counts a loop's body once, so a scanned model's flops would be short.
  """
  for name in _CONFIGS.value:
    config = load_config(name)
    if 'scan_layers' in config.model:
      config.model.scan_layers = False
    config.data.batch_size, config.compute_dtype = _BATCH.value, 'float32'
    config.mesh.axes = {'data': 1}
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    model = models.build(config.model)
    task = tasks.build(config.task, model)
    tx, schedule = optim.build(config.optimizer, 1000)
    images = np.random.default_rng(0).normal(size=(_BATCH.value, 224, 224, 3)).astype(np.float32)
    batch = {'image': images, 'label': np.arange(_BATCH.value, dtype=np.int32)}
    state, shardings = state_lib.create(model, tx, images[:1], config.seed, mesh, config.mesh.rules)
    strategy = strategies.build('jit', mesh, shardings)
    train_step, _ = compile_steps(task, tx, schedule, strategy, config)
    batch = strategy.put_batch(batch)
    started = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - started
    xla_flops = float(compiled.cost_analysis()['flops'])
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - started) / _STEPS.value
    analytic = 3 * forward_flops(model, jax.ShapeDtypeStruct(images.shape, images.dtype))
    print(json.dumps({'benchmark': 'cpu_step', 'config': name, 'batch': _BATCH.value, 'dtype': 'float32',
                      'scan_layers': config.model.get('scan_layers'),
                      'step_s': round(step_s, 3), 'compile_s': round(compile_s, 1), 'xla_flops_per_step': xla_flops,
                      'analytic_flops_per_step': analytic, 'xla_over_analytic': round(xla_flops / analytic, 3),
                      'analytic_forward_gflops_per_image': round(analytic / 3 / _BATCH.value / 1e9, 3),
                      **context()}), flush=True)


def main(argv):
  del argv
  compile_depth() if _WHAT.value == 'compile_depth' else cpu_steps()


if __name__ == '__main__':
  app.run(main)
