"""Ahead-of-time planning: the config's real train step compiled for a device topology without its devices.

`plan(config, devices)` builds the run's own parts (model, task, optimizer, mesh, logical rules,
micro-batches, compute dtype) exactly as zoo.train.loop does, but with abstract inputs taken from the
config (no data), compiles zoo.train.step's train step for `devices` (a TPU topology from libtpu's
deviceless compiler, or CPU devices), and reads the compiler's figures per chip: memory
(memory_analysis), flops and its step-time estimate (cost_analysis) and the collectives in the
compiled program.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from zoo import models, tasks
from zoo.errors import ConfigError
from zoo.models.flops import forward_flops
from zoo.parallel import make_mesh, strategies
from zoo.parallel.mesh import logical_shardings
from zoo.train import optim
from zoo.train import state as state_lib
from zoo.train.step import compile_steps, step_options

GIB = 1024 ** 3
# Per-chip HBM and dense bf16 peak flops/s by JAX device_kind (published chip figures).
CHIPS = {
    'TPU v4': (32 * GIB, 275e12),
    'TPU v5 lite': (16 * GIB, 197e12),
    'TPU v5': (95 * GIB, 459e12),
    'TPU v5p': (95 * GIB, 459e12),
    'TPU v6 lite': (32 * GIB, 918e12),
}
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4, 's32': 4, 'u32': 4,
                'f64': 8, 's64': 8, 'u64': 8}
# Image shapes of datasets whose configs give no data.image_size.
IMAGE_SHAPES = {'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1), 'binarized_mnist': (28, 28, 1),
                'cifar10': (32, 32, 3)}
_OUT_OF_MEMORY = re.compile(r'RESOURCE_EXHAUSTED: .*?required for HLO temporaries \(([\d.]+)([KMGT]?)\)')
_UNITS = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}
_SHAPE = re.compile(r'\b(pred|[suf]\d+|bf16)\[([\d,]*)\]')


def abstract_batch(config: ml_collections.ConfigDict, input_key: str) -> dict[str, jax.ShapeDtypeStruct]:
  """One global train batch as shapes, from the config: images f32[B, S, S, 3] (data.image_size; known
  datasets' shapes otherwise) or
  tokens i32[B, T] (data.max_length), and labels i32[B]."""
  batch = config.data.batch_size
  if input_key == 'tokens':
    length = config.data.get('max_length') or config.model.get('max_len')
    model_input = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  else:
    size = config.data.get('image_size')
    shape = (size, size, config.data.get('channels', 3)) if size else IMAGE_SHAPES.get(config.data.name)
    if shape is None:
      raise ConfigError(f'The planner needs config.data.image_size (pixels of a square input) for an image model '
                        f'on {config.data.name!r}.')
    model_input = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
  return {input_key: model_input, 'label': jax.ShapeDtypeStruct((batch,), jnp.int32)}


def collectives(hlo_text: str) -> dict[str, dict[str, float]]:
  """{op: {'count', 'bytes'}} of the collectives in an HLO module's text; bytes are each op's result size,
  and an op inside a loop (scan, micro-batches) is counted once, not once per iteration."""
  found = {op: {'count': 0, 'bytes': 0} for op in COLLECTIVES}
  for line in hlo_text.splitlines():
    match = re.search(r'=\s*(.*?)\s(' + '|'.join(COLLECTIVES) + r')(-start)?\(', line)
    if not match:
      continue
    size = sum(_DTYPE_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
               for dtype, dims in _SHAPE.findall(match.group(1)))
    found[match.group(2)]['count'] += 1
    found[match.group(2)]['bytes'] += size
  return {op: value for op, value in found.items() if value['count']}


@dataclasses.dataclass
class Plan:
  """What the compiler says about one config on one topology (bytes and flops per chip unless said)."""
  topology: str
  chips: int
  device_kind: str
  mesh: dict[str, int]
  batch_size: int
  microbatches: int
  remat: str | None
  compute_dtype: str
  params_bytes: int  # params (f32), this chip's shards
  optimizer_bytes: int  # optimizer state and the rest of the train state, this chip's shards
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int  # activations and other temporaries
  total_bytes: int  # arguments + outputs - aliased + temporaries + generated code
  hbm_bytes: int | None
  fits: bool | None
  xla_flops_per_chip: float
  xla_flops_per_step: float
  analytic_flops_per_step: float
  collectives: dict[str, dict[str, float]]
  compile_s: float
  xla_estimated_step_s: float | None
  xla_estimated_mfu: float | None
  xla_optimal_seconds: float | None  # cost_analysis()['optimal_seconds'] as XLA gives it (<= 0: no estimate)
  compiler_message: str = ''  # the compiler's out-of-memory line when it refused the program

  def row(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _batch_split(mesh) -> int:
  """How many ways the batch is split: the product of the mesh's data and fsdp axes."""
  return int(np.prod([mesh.shape[a] for a in ('data', 'fsdp') if a in mesh.axis_names]))


def _sharded_bytes(abstract: Any, shardings: Any) -> int:
  """Bytes one device holds of `abstract` (ShapeDtypeStructs) under `shardings`."""
  return int(sum(np.prod(sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
                 for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))))


def plan(config: ml_collections.ConfigDict, devices: Sequence[jax.Device], topology: str = '') -> Plan:
  """Compiles `config`'s train step for `devices` and reads the compiler's figures (see the module doc)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if devices[0].platform != 'cpu' or len(devices) > 1:
    config.cpu_compiler_options = {}
  mesh = make_mesh(config.mesh, devices)
  strategy_name = config.mesh.get('strategy', 'jit')
  if strategy_name != 'jit':
    raise ConfigError(f'The planner compiles the jit strategy; config.mesh.strategy={strategy_name!r}: '
                      'set it to "jit".')
  strategies.check(strategy_name, mesh)
  microbatches, compute_dtype = step_options(config)
  model = models.build(config.model)
  task = tasks.build(config.task, model)
  batch = abstract_batch(config, task.input_key)
  batch_devices = _batch_split(mesh)
  if (config.data.batch_size // microbatches) % batch_devices:
    raise ConfigError(f'A batch of {config.data.batch_size} in {microbatches} micro-batches does not split over the '
                      f'{batch_devices} devices of the data and fsdp axes; choose a mesh or batch size that divides.')
  tx, schedule = optim.build(config.optimizer, max(config.get('num_train_steps', -1), 100_000))
  example = jax.ShapeDtypeStruct((1, *batch[task.input_key].shape[1:]), batch[task.input_key].dtype)

  def init_boxed(x):
    return state_lib.init_boxed(model, tx, x, config.seed)

  boxed = jax.eval_shape(init_boxed, example)
  shardings = logical_shardings(boxed, mesh, config.mesh.rules)
  abstract = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                          jax.eval_shape(lambda x: state_lib.unbox(init_boxed(x)), example), shardings)
  strategy = strategies.build(strategy_name, mesh, shardings)
  train_step, _ = compile_steps(task, tx, schedule, strategy, config)
  started = time.perf_counter()
  lowered = train_step.trace(abstract, batch).lower()
  params_bytes = _sharded_bytes(abstract.params, shardings.params)
  state_bytes = _sharded_bytes(abstract, shardings)
  kind = devices[0].device_kind
  hbm, peak = CHIPS.get(kind, (None, None))
  analytic = 3.0 * forward_flops(model, batch[task.input_key])
  common = dict(topology=topology, chips=len(devices), device_kind=kind, mesh=dict(mesh.shape),
                batch_size=config.data.batch_size, microbatches=microbatches, remat=config.model.get('remat'),
                compute_dtype=config.get('compute_dtype', 'float32'), params_bytes=params_bytes,
                optimizer_bytes=state_bytes - params_bytes, hbm_bytes=hbm, analytic_flops_per_step=analytic)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as error:
    needed = _OUT_OF_MEMORY.search(str(error))
    if not needed:
      raise
    # The TPU compiler refuses a program that does not fit; its message gives the temporaries' size.
    temp = int(float(needed.group(1)) * _UNITS[needed.group(2)])
    batch_bytes = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(batch)) // _batch_split(mesh)
    return Plan(**common, argument_bytes=int(state_bytes + batch_bytes), output_bytes=state_bytes,
                alias_bytes=state_bytes, temp_bytes=temp, total_bytes=int(state_bytes + batch_bytes + temp), fits=False,
                xla_flops_per_chip=0.0, xla_flops_per_step=0.0, collectives={},
                compile_s=time.perf_counter() - started, xla_estimated_step_s=None, xla_estimated_mfu=None,
                xla_optimal_seconds=None, compiler_message=str(error).splitlines()[0][:300])
  compile_s = time.perf_counter() - started

  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
           + memory.temp_size_in_bytes + memory.generated_code_size_in_bytes)
  flops_chip = float(cost.get('flops', 0.0))
  raw_estimate = cost.get('optimal_seconds')
  estimate = float(raw_estimate) if raw_estimate and raw_estimate > 0 else None
  mfu = analytic / (len(devices) * peak * estimate) if estimate and peak else None
  return Plan(
      **common, argument_bytes=memory.argument_size_in_bytes,
      output_bytes=memory.output_size_in_bytes, alias_bytes=memory.alias_size_in_bytes,
      temp_bytes=memory.temp_size_in_bytes, total_bytes=int(total),
      fits=None if hbm is None else bool(total <= hbm), xla_flops_per_chip=flops_chip,
      xla_flops_per_step=flops_chip * len(devices),
      collectives=collectives(compiled.as_text()), compile_s=compile_s, xla_estimated_step_s=estimate,
      xla_estimated_mfu=mfu, xla_optimal_seconds=None if raw_estimate is None else float(raw_estimate))


def mesh_splits(chips: int, tensor_max: int = 8) -> list[dict[str, int]]:
  """Mesh axes {'data', 'fsdp', 'tensor'} whose sizes multiply to `chips`, tensor <= tensor_max."""
  splits = []
  for tensor in [t for t in range(1, min(chips, tensor_max) + 1) if chips % t == 0]:
    rest = chips // tensor
    for fsdp in [f for f in range(1, rest + 1) if rest % f == 0]:
      splits.append({'data': rest // fsdp, 'fsdp': fsdp, 'tensor': tensor})
  return splits


def search(config: ml_collections.ConfigDict, devices: Sequence[jax.Device], topology: str = '', *,
           remats: Sequence[str] = ('none', 'full'), microbatches: Sequence[int] = (1, 4),
           splits: Sequence[dict[str, int]] | None = None, log=print) -> list[Plan]:
  """Plans over mesh splits x remat policies x micro-batch counts; those that fit, fastest (XLA's estimate)
  first, then by memory. Combinations that do not divide the batch are skipped."""
  plans = []
  has_remat = 'remat' in config.model
  for axes in splits or mesh_splits(len(devices)):
    for remat in remats if has_remat else (None,):
      for count in microbatches:
        candidate = ml_collections.ConfigDict(config.to_dict())
        candidate.mesh.axes = axes
        candidate.microbatches = count
        if remat is not None:
          candidate.model.remat = remat
        try:
          result = plan(candidate, devices, topology)
        except ConfigError as error:
          log(f'skip {axes} remat={remat} microbatches={count}: {error}')
          continue
        log(f'{axes} remat={remat} microbatches={count}: {result.total_bytes / GIB:.2f} GiB, fits={result.fits}, '
            f'XLA estimate {result.xla_estimated_step_s}')
        plans.append(result)
  fitting = [p for p in plans if p.fits is not False]
  return sorted(fitting, key=lambda p: (p.xla_estimated_step_s or float('inf'), p.total_bytes))
