r"""Checks and times zoo.kernels on the current backend; prints one JSON object per line.

  python experiments/kernel_benchmark.py                 # equivalence checks + benchmarks
  python experiments/kernel_benchmark.py --only=checks   # equivalence checks only
  python experiments/kernel_benchmark.py --only=transformer  # zoo Transformer train step MFU

Checks (compiled kernels vs the references, values and gradients): the Pallas
LSTM/GRU recurrence vs the scan (f32, bf16; ragged lengths), Pallas and cuDNN
attention vs the xla reference (padding and causal masks).
Benchmarks: attention forward+backward for xla / cudnn / pallas at
T in {512, 2048, 8192}, head dim 64/128, bf16, with achieved TFLOP/s; the
LSTM/GRU recurrence forward+backward for scan / fused (at each --recurrence_chunks) /
pallas at B=64, T in {128, 512}, H in {256, 1024}, alone and as recurrent_layer
(input projection included); the zoo Transformer's whole train step
(zoo.train.step, AdamW) on synthetic tokens in f32 and bf16 compute, with
XLA's and the analytic FLOPs and the MFU against the device's peak.
Needs jax, flax, optax, absl and ml_collections (no zoo data deps).
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from zoo.kernels import attention, recurrence  # pylint: disable=wrong-import-position

PARTS = ('hopper_checks', 'attention', 'transformer', 'checks', 'recurrence')
_ONLY = flags.DEFINE_multi_enum('only', [], PARTS, 'Run these parts only (repeatable).')
_ATTENTION_DTYPE = flags.DEFINE_enum('attention_dtype', 'bfloat16', ['bfloat16', 'float16'],
                                     'Dtype of the attention benchmark.')
_CHECK_HIDDEN = flags.DEFINE_list('check_hidden', ['64', '128'], 'Hidden sizes of the recurrence checks.')
_CHECK_VARIANTS = flags.DEFINE_list('check_variants', ['fused', 'pallas'], 'Recurrence implementations checked.')
_TRANSFORMER_SIZES = flags.DEFINE_list('transformer_sizes', ['zoo_cpu_suite', 'bert_base'], 'Sizes benchmarked.')
_TRANSFORMER_ATTENTION = flags.DEFINE_list('transformer_attention', ['auto'], 'Attention implementations tried.')
_TRANSFORMER_DTYPES = flags.DEFINE_list('transformer_dtypes', ['float32', 'bfloat16'], 'Compute dtypes tried.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed calls per case (after 2 warm-up calls).')
_RECURRENCE_CHUNKS = flags.DEFINE_list('recurrence_chunks', [], "Steps per chunk tried for 'fused' "
                                       "(default: the backend's, recurrence.chunk_steps()).")
_RECURRENCE_CELLS = flags.DEFINE_list('recurrence_cells', ['lstm', 'gru'], 'Cells benchmarked.')
_RECURRENCE_LAYER = flags.DEFINE_bool('recurrence_layer', True, 'Also time recurrent_layer (input projection '
                                      'included, D = H).')


def emit(record: dict) -> None:
  record.update(backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind, jax=jax.__version__)
  print(json.dumps(record), flush=True)


def median_ms(function, *args) -> float:
  for _ in range(2):
    jax.block_until_ready(function(*args))
  times = []
  for _ in range(_REPEATS.value):
    started = time.perf_counter()
    jax.block_until_ready(function(*args))
    times.append(time.perf_counter() - started)
  return float(np.median(times) * 1e3)


def max_relative_error(want, got) -> float:
  errors = [float(jnp.abs(jnp.asarray(g, jnp.float32) - jnp.asarray(w, jnp.float32)).max()
                  / (jnp.abs(jnp.asarray(w, jnp.float32)).max() + 1e-6))
            for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got))]
  return max(errors)


def first_bad_step(want, got, tolerance=2e-2) -> int | None:
  """First time step whose outputs [T, B, H] differ from the reference by more than `tolerance` (or NaN)."""
  error = np.abs(np.asarray(got, np.float32) - np.asarray(want, np.float32)).max(axis=(1, 2))
  bad = np.flatnonzero(~(error <= tolerance))
  return int(bad[0]) if bad.size else None


def recurrence_inputs(cell, dtype, batch, length, hidden, seed=0):
  gates = recurrence.GATES[cell]
  keys = jax.random.split(jax.random.key(seed), 4)
  projected = jax.random.normal(keys[0], (length, batch, gates * hidden)).astype(dtype)
  kernel = (jax.random.normal(keys[1], (hidden, gates * hidden)) / np.sqrt(hidden)).astype(dtype)
  bias = (0.1 * jax.random.normal(keys[2], (gates * hidden,))).astype(dtype)
  lengths = jax.random.randint(keys[3], (batch,), 1, length + 1).at[0].set(length)
  valid = (jnp.arange(length)[:, None] < lengths[None, :])[..., None]
  return projected, valid, kernel, bias


def recurrence_grad(cell, implementation, valid, layer=False, chunk=None):
  """jit(value_and_grad) of a loss over `recurrence` (args: projected, kernel, bias) or, with `layer`,
  over `recurrent_layer` (args: x, input_kernel, input_bias, kernel, bias)."""
  run = recurrence.recurrent_layer if layer else recurrence.recurrence

  def loss(*args):
    outputs, state = run(cell, args[0], valid, *args[1:], implementation=implementation, chunk=chunk)
    return outputs.astype(jnp.float32).sum() + sum((s.astype(jnp.float32) ** 2).sum() for s in state)
  return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(5 if layer else 3))))


def attention_inputs(dtype, batch, length, heads, head_dim, seed=1):
  keys = jax.random.split(jax.random.key(seed), 3)
  q, k, v = (jax.random.normal(key, (batch, length, heads, head_dim)).astype(dtype) for key in keys)
  valid = jnp.arange(length)[None, :] < jnp.linspace(length // 2, length, batch).astype(jnp.int32)[:, None]
  return q, k, v, valid


def attention_grad(implementation, valid, causal):
  def loss(q, k, v):
    out = attention.dot_product_attention(q, k, v, valid, causal=causal, implementation=implementation)
    real = valid[:, :, None, None] if valid is not None else 1.0
    return (out.astype(jnp.float32) * real).sum()
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def checks() -> None:
  for cell, dtype, hidden in itertools.product(('lstm', 'gru'), ('float32', 'bfloat16'), map(int, _CHECK_HIDDEN.value)):
    inputs = recurrence_inputs(cell, dtype, batch=40, length=24, hidden=hidden)
    f32_inputs = [x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x for x in inputs]
    with jax.default_matmul_precision('highest'):  # the reference in full f32, not TF32
      want = recurrence_grad(cell, 'scan', inputs[1])(f32_inputs[0], *f32_inputs[2:])
      want_forward = recurrence.recurrence(cell, f32_inputs[0], inputs[1], *f32_inputs[2:], implementation='scan')
    for implementation in _CHECK_VARIANTS.value:
      try:
        forward = jax.jit(lambda *args, i=implementation: recurrence.recurrence(cell, *args, implementation=i))
        got_forward = forward(inputs[0], inputs[1], *inputs[2:])
        got = recurrence_grad(cell, implementation, inputs[1])(inputs[0], *inputs[2:])
        emit({'check': f'{cell}_{implementation}', 'dtype': dtype, 'H': hidden,
              'max_rel_error': max_relative_error(want, got),
              'forward_rel_error': max_relative_error(want_forward, got_forward),
              'first_bad_step': first_bad_step(want_forward[0], got_forward[0])})
      except Exception as error:  # pylint: disable=broad-except
        emit({'check': f'{cell}_{implementation}', 'dtype': dtype, 'H': hidden, 'error': repr(error)[:500]})
  for dtype in ('float32', 'bfloat16'):
    for causal in (False, True):
      q, k, v, valid = attention_inputs(dtype, batch=2, length=256, heads=4, head_dim=64)
      f32 = [x.astype(jnp.float32) for x in (q, k, v)]
      want = attention_grad('xla', valid, causal)(*f32)
      for implementation in ('pallas', 'cudnn'):
        try:
          got = attention_grad(implementation, valid, causal)(q, k, v)
          emit({'check': f'attention_{implementation}', 'dtype': dtype, 'causal': causal,
                'max_rel_error': max_relative_error(want, got)})
        except Exception as error:  # pylint: disable=broad-except
          emit({'check': f'attention_{implementation}', 'dtype': dtype, 'causal': causal,
                'error': repr(error)[:500]})


def hopper_checks() -> None:
  """The Mosaic GPU (FA3) route of 'pallas': no masks, half precision, vs the f32 xla reference."""
  for dtype in ('bfloat16', 'float16'):
    for head_dim in (64, 128):
      q, k, v, _ = attention_inputs(dtype, batch=2, length=512, heads=4, head_dim=head_dim)
      route = attention.hopper_unsupported(q) or 'hopper'
      want = attention_grad('xla', None, False)(*[x.astype(jnp.float32) for x in (q, k, v)])
      try:
        got = attention_grad('pallas', None, False)(q, k, v)
        emit({'check': 'attention_pallas_nomask', 'route': route, 'dtype': dtype, 'd': head_dim,
              'max_rel_error': max_relative_error(want, got)})
      except Exception as error:  # pylint: disable=broad-except
        emit({'check': 'attention_pallas_nomask', 'route': route, 'dtype': dtype, 'd': head_dim,
              'error': repr(error)[:500]})


def attention_benchmarks() -> None:
  heads, tokens = 8, 16384  # batch * length fixed, so every length does comparable work
  for length in (512, 2048, 8192):
    for head_dim in (64, 128):
      batch = max(1, tokens // length)
      q, k, v, _ = attention_inputs(_ATTENTION_DTYPE.value, batch, length, heads, head_dim)
      flops = 4 * batch * heads * length * length * head_dim * 3.5  # forward 2 matmuls, backward 5
      for implementation in ('xla', 'cudnn', 'pallas'):
        route = (attention.hopper_unsupported(q) or 'hopper') if implementation == 'pallas' else None
        try:
          ms = median_ms(attention_grad(implementation, None, False), q, k, v)
          emit({'bench': 'attention_fwd_bwd', 'implementation': implementation, 'route': route, 'T': length,
                'd': head_dim, 'batch': batch, 'heads': heads, 'dtype': _ATTENTION_DTYPE.value,
                'ms': round(ms, 3), 'tflops': round(flops / ms / 1e9, 1)})
        except Exception as error:  # pylint: disable=broad-except
          emit({'bench': 'attention_fwd_bwd', 'implementation': implementation, 'route': route, 'T': length,
                'd': head_dim, 'error': repr(error)[:300]})


def recurrence_benchmarks() -> None:
  chunks = [int(c) for c in _RECURRENCE_CHUNKS.value] or [recurrence.chunk_steps()]
  variants = [('scan', None)] + [('fused', chunk) for chunk in chunks]
  for cell in _RECURRENCE_CELLS.value:
    for length in (128, 512):
      for hidden in (256, 1024):
        projected, valid, kernel, bias = recurrence_inputs(cell, 'float32', batch=64, length=length, hidden=hidden)
        x = projected[..., :hidden]
        input_kernel = (jax.random.normal(jax.random.key(5), (hidden, kernel.shape[1])) / np.sqrt(hidden))
        cases = [('fwd_bwd', False, (projected, kernel, bias))]
        if _RECURRENCE_LAYER.value:
          cases.append(('layer_fwd_bwd', True, (x, input_kernel, bias, kernel, bias)))
        # The Pallas kernel is 10-200x slower (benchmarks/README.md): timed at the smallest size only.
        pallas = [('pallas', None)] if (length, hidden) == (128, 256) else []
        for (name, layer, args), (implementation, chunk) in itertools.product(cases, variants + pallas):
          record = {'bench': f'{cell}_{name}', 'implementation': implementation, 'chunk': chunk, 'B': 64,
                    'T': length, 'H': hidden, 'dtype': 'float32'}
          try:
            record['ms'] = round(median_ms(recurrence_grad(cell, implementation, valid, layer, chunk), *args), 3)
          except Exception as error:  # pylint: disable=broad-except
            record['error'] = repr(error)[:300]
          emit(record)


# (name, d_model, heads, layers, d_ff, length, batch): the CPU suite's size and a BERT-base-sized encoder.
TRANSFORMER_SIZES = [('zoo_cpu_suite', 256, 4, 4, 1024, 128, 32), ('bert_base', 768, 12, 12, 3072, 512, 32)]


def transformer_flops(d_model, layers, d_ff, length, batch, vocab, classes) -> float:
  """Analytic train-step FLOPs (forward x 3): QKV/out and FFN matmuls, QK^T and PV, classifier."""
  per_token = layers * (2 * 4 * d_model * d_model + 2 * 2 * d_model * d_ff + 2 * 2 * length * d_model)
  del vocab  # the embedding is a gather, no FLOPs
  return 3.0 * batch * (length * per_token + 2 * d_model * classes)


def transformer_benchmarks() -> None:
  """The zoo Transformer's train step (zoo.train.step.train_step, AdamW) on random tokens, f32 vs bf16 compute."""
  import functools  # pylint: disable=import-outside-toplevel

  import ml_collections  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from zoo import benchmarking, models  # pylint: disable=import-outside-toplevel
  from zoo.parallel import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from zoo.tasks.classification import Classification  # pylint: disable=import-outside-toplevel
  from zoo.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from zoo.train import step as step_lib
  vocab, classes = 32000, 2
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(axes={'data': -1, 'fsdp': 1, 'tensor': 1})))
  sizes = [size for size in TRANSFORMER_SIZES if size[0] in _TRANSFORMER_SIZES.value]
  for (name, d_model, heads, layers, d_ff, length, batch), attention_kind in itertools.product(
      sizes, _TRANSFORMER_ATTENTION.value):
    model = models.build(ml_collections.ConfigDict(dict(
        name='transformer', vocab_size=vocab, max_len=length, d_model=d_model, num_heads=heads, num_layers=layers,
        d_ff=d_ff, dropout_rate=0.0, causal=False, head='classify', pooling='mean', num_classes=classes,
        attention=attention_kind)))
    tokens = jax.random.randint(jax.random.key(0), (batch, length), 1, vocab)
    batch_arrays = {'tokens': tokens, 'label': jnp.arange(batch) % classes}
    tx = optax.adamw(1e-4)
    for compute_dtype in _TRANSFORMER_DTYPES.value:
      try:
        state, _ = state_lib.create(model, tx, tokens, 0, mesh, mesh_lib.DEFAULT_RULES)
        step = jax.jit(functools.partial(step_lib.train_step, task=Classification(model, input_key='tokens'), tx=tx,
                                         schedule=optax.constant_schedule(1e-4),
                                         compute_dtype=step_lib.COMPUTE_DTYPES[compute_dtype]), donate_argnums=0)
        started = time.perf_counter()
        compiled = step.lower(state, batch_arrays).compile()
        compile_s = time.perf_counter() - started
        for _ in range(3):
          state, metrics = compiled(state, batch_arrays)
        jax.block_until_ready(metrics)
        times = []
        for _ in range(_REPEATS.value * 2):
          started = time.perf_counter()
          state, metrics = compiled(state, batch_arrays)
          jax.block_until_ready(metrics)
          times.append(time.perf_counter() - started)
        ms = float(np.median(times) * 1e3)
        flops = transformer_flops(d_model, layers, d_ff, length, batch, vocab, classes)
        # MFU for bf16 only: XLA runs f32 matmuls on GPUs in TF32 by default, so no f32 peak applies.
        peak = (benchmarking.peak_flops(jax.devices()[0].device_kind, 'bfloat16')
                if compute_dtype == 'bfloat16' else None)
        emit({'bench': 'transformer_train_step', 'size': name, 'attention': attention_kind, 'd_model': d_model,
              'heads': heads, 'layers': layers, 'd_ff': d_ff, 'T': length, 'batch': batch,
              'compute_dtype': compute_dtype, 'compile_s': round(compile_s, 1),
              'ms': round(ms, 3), 'tokens_per_s': round(batch * length / ms * 1e3),
              'xla_flops': benchmarking.compiled_costs(compiled)['flops_per_step'], 'analytic_flops': flops,
              'tflops': round(flops / ms / 1e9, 1), 'mfu': round(flops / ms * 1e3 / peak, 3) if peak else None,
              'loss': float(metrics['loss'])})
      except Exception as error:  # pylint: disable=broad-except
        emit({'bench': 'transformer_train_step', 'size': name, 'attention': attention_kind,
              'compute_dtype': compute_dtype, 'error': repr(error)[:500]})


def main(argv):
  del argv
  parts = {'hopper_checks': hopper_checks, 'attention': attention_benchmarks, 'transformer': transformer_benchmarks,
           'checks': checks, 'recurrence': recurrence_benchmarks}
  for name in PARTS:
    if not _ONLY.value or name in _ONLY.value:
      parts[name]()


if __name__ == '__main__':
  app.run(main)
