r"""Checks and times zoo.kernels on the current backend; prints one JSON object per line.

  python experiments/kernel_benchmark.py                 # equivalence checks + benchmarks
  python experiments/kernel_benchmark.py --only=checks   # equivalence checks only

Checks (compiled kernels vs the references, values and gradients): the Pallas
LSTM/GRU recurrence vs the scan (f32, bf16; ragged lengths), Pallas and cuDNN
attention vs the xla reference (padding and causal masks).
Benchmarks: attention forward+backward for xla / cudnn / pallas at
T in {512, 2048, 8192}, head dim 64/128, bf16, with achieved TFLOP/s; the
LSTM/GRU recurrence forward+backward for scan / fused / pallas at B=64,
T in {128, 512}, H in {256, 1024}. Needs only jax and absl (no zoo data deps).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from zoo.kernels import attention, recurrence  # pylint: disable=wrong-import-position

os.environ.setdefault('ZOO_EXPERIMENTAL_PALLAS_RECURRENCE', '1')  # this script is where the kernel is checked

_ONLY = flags.DEFINE_enum('only', None, ['checks', 'attention', 'recurrence'], 'Run one part only.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed calls per case (after 2 warm-up calls).')


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


def recurrence_inputs(cell, dtype, batch, length, hidden, seed=0):
  gates = recurrence.GATES[cell]
  keys = jax.random.split(jax.random.key(seed), 4)
  projected = jax.random.normal(keys[0], (length, batch, gates * hidden)).astype(dtype)
  kernel = (jax.random.normal(keys[1], (hidden, gates * hidden)) / np.sqrt(hidden)).astype(dtype)
  bias = (0.1 * jax.random.normal(keys[2], (gates * hidden,))).astype(dtype)
  lengths = jax.random.randint(keys[3], (batch,), 1, length + 1).at[0].set(length)
  valid = (jnp.arange(length)[:, None] < lengths[None, :])[..., None]
  return projected, valid, kernel, bias


def recurrence_grad(cell, implementation, valid):
  def loss(projected, kernel, bias):
    outputs, state = recurrence.recurrence(cell, projected, valid, kernel, bias, implementation=implementation)
    return outputs.astype(jnp.float32).sum() + sum((s.astype(jnp.float32) ** 2).sum() for s in state)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def attention_inputs(dtype, batch, length, heads, head_dim, seed=1):
  keys = jax.random.split(jax.random.key(seed), 3)
  q, k, v = (jax.random.normal(key, (batch, length, heads, head_dim)).astype(dtype) for key in keys)
  key_valid = jnp.arange(length)[None, :] < jnp.linspace(length // 2, length, batch).astype(jnp.int32)[:, None]
  return q, k, v, key_valid


def attention_grad(implementation, key_valid, causal):
  def loss(q, k, v):
    out = attention.dot_product_attention(q, k, v, key_valid, causal=causal, implementation=implementation)
    real = key_valid[:, :, None, None] if key_valid is not None else 1.0
    return (out.astype(jnp.float32) * real).sum()
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def checks() -> None:
  for cell in ('lstm', 'gru'):
    for dtype in ('float32', 'bfloat16'):
      inputs = recurrence_inputs(cell, dtype, batch=40, length=24, hidden=64)
      f32_inputs = [x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x for x in inputs]
      want = recurrence_grad(cell, 'scan', inputs[1])(f32_inputs[0], *f32_inputs[2:])
      for implementation in ('fused', 'pallas'):
        try:
          got = recurrence_grad(cell, implementation, inputs[1])(inputs[0], *inputs[2:])
          emit({'check': f'{cell}_{implementation}', 'dtype': dtype,
                'max_rel_error': max_relative_error(want, got)})
        except Exception as error:  # pylint: disable=broad-except
          emit({'check': f'{cell}_{implementation}', 'dtype': dtype, 'error': repr(error)[:500]})
  for dtype in ('float32', 'bfloat16'):
    for causal in (False, True):
      q, k, v, key_valid = attention_inputs(dtype, batch=2, length=256, heads=4, head_dim=64)
      f32 = [x.astype(jnp.float32) for x in (q, k, v)]
      want = attention_grad('xla', key_valid, causal)(*f32)
      for implementation in ('pallas', 'cudnn'):
        try:
          got = attention_grad(implementation, key_valid, causal)(q, k, v)
          emit({'check': f'attention_{implementation}', 'dtype': dtype, 'causal': causal,
                'max_rel_error': max_relative_error(want, got)})
        except Exception as error:  # pylint: disable=broad-except
          emit({'check': f'attention_{implementation}', 'dtype': dtype, 'causal': causal,
                'error': repr(error)[:500]})


def attention_benchmarks() -> None:
  heads, tokens = 8, 16384  # batch * length fixed, so every length does comparable work
  for length in (512, 2048, 8192):
    for head_dim in (64, 128):
      batch = max(1, tokens // length)
      q, k, v, _ = attention_inputs('bfloat16', batch, length, heads, head_dim)
      flops = 4 * batch * heads * length * length * head_dim * 3.5  # forward 2 matmuls, backward 5
      for implementation in ('xla', 'cudnn', 'pallas'):
        try:
          ms = median_ms(attention_grad(implementation, None, False), q, k, v)
          emit({'bench': 'attention_fwd_bwd', 'implementation': implementation, 'T': length, 'd': head_dim,
                'batch': batch, 'heads': heads, 'dtype': 'bfloat16', 'ms': round(ms, 3),
                'tflops': round(flops / ms / 1e9, 1)})
        except Exception as error:  # pylint: disable=broad-except
          emit({'bench': 'attention_fwd_bwd', 'implementation': implementation, 'T': length, 'd': head_dim,
                'error': repr(error)[:300]})


def recurrence_benchmarks() -> None:
  for cell in ('lstm', 'gru'):
    for length in (128, 512):
      for hidden in (256, 1024):
        inputs = recurrence_inputs(cell, 'float32', batch=64, length=length, hidden=hidden)
        for implementation in ('scan', 'fused', 'pallas'):
          try:
            ms = median_ms(recurrence_grad(cell, implementation, inputs[1]), inputs[0], *inputs[2:])
            emit({'bench': f'{cell}_fwd_bwd', 'implementation': implementation, 'B': 64, 'T': length,
                  'H': hidden, 'dtype': 'float32', 'ms': round(ms, 3)})
          except Exception as error:  # pylint: disable=broad-except
            emit({'bench': f'{cell}_fwd_bwd', 'implementation': implementation, 'T': length, 'H': hidden,
                  'error': repr(error)[:300]})


def main(argv):
  del argv
  parts = {'checks': checks, 'attention': attention_benchmarks, 'recurrence': recurrence_benchmarks}
  for name, part in parts.items():
    if _ONLY.value in (None, name):
      part()


if __name__ == '__main__':
  app.run(main)
