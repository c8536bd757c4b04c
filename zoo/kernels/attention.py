"""Scaled dot-product attention: the one function every zoo attention layer calls.

`implementation` picks the kernel:
  'xla'    the jnp reference below: softmax(q k^T / sqrt(d), masked) v, softmax in f32.
  'cudnn'  jax.nn.dot_product_attention's cuDNN flash attention (NVIDIA GPUs, f16/bf16).
  'pallas' the Pallas flash attention JAX ships for GPUs (jax.experimental.pallas.ops.gpu
           .attention.mha, forward and backward kernels); interpret mode off GPU.
  'auto'   per backend, shape and dtype (see `choose`), falling back to 'xla' with a logged reason;
           'pallas' is never picked automatically: on H100 it is 1.4-3.7x slower than cuDNN
           (benchmarks/README.md) and its f32 path uses TF32.

Masks: `key_valid` marks real (non-padding) keys; `causal` lets query i see keys <= i.
Outputs at padded query positions are unspecified (kernels differ there); real
positions agree across implementations, and so do gradients of any loss that
ignores padded positions, as the zoo Transformer's does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import logging

IMPLEMENTATIONS = ('xla', 'cudnn', 'pallas', 'auto')
HALF_DTYPES = (jnp.bfloat16, jnp.float16)


def attention_weights(query, key, key_valid=None, causal=False):
  """softmax(q k^T / sqrt(d), masked) in f32: query [B, Tq, H, D], key [B, Tk, H, D] -> f32[B, H, Tq, Tk]."""
  scale = query.shape[-1] ** -0.5
  logits = jnp.einsum('bqhd,bkhd->bhqk', query * scale, key).astype(jnp.float32)
  mask = _mask(key_valid, causal, query.shape[1], key.shape[1])
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


def xla_attention(query, key, value, key_valid=None, causal=False):
  """The reference. query: [B, Tq, H, D], key/value: [B, Tk, H, D], key_valid: bool[B, Tk] -> [B, Tq, H, D]."""
  weights = attention_weights(query, key, key_valid, causal).astype(value.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, value)


def _mask(key_valid, causal, q_len, k_len):
  """bool[B or 1, 1, Tq, Tk] or None."""
  mask = None if key_valid is None else key_valid[:, None, None, :]
  if causal:
    lower = jnp.tril(jnp.ones((q_len, k_len), bool))[None, None]
    mask = lower if mask is None else mask & lower
  return mask


def cudnn_attention(query, key, value, key_valid=None, causal=False):
  """cuDNN flash attention through jax.nn.dot_product_attention (GPU, f16/bf16)."""
  mask = None
  if key_valid is not None:  # cuDNN takes the mask only at its full [B, 1, Tq, Tk] shape
    mask = jnp.broadcast_to(key_valid[:, None, None, :], (key.shape[0], 1, query.shape[1], key.shape[1]))
  return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=causal, implementation='cudnn')


def pallas_attention(query, key, value, key_valid=None, causal=False):
  """JAX's Pallas flash attention for GPUs; padding as segment ids (real keys 1, padding 0)."""
  from jax.experimental.pallas.ops.gpu import attention  # pylint: disable=import-outside-toplevel
  reason = pallas_unsupported(query)
  if reason is not None:
    raise ValueError(f'Pallas attention cannot take this input: {reason}; use implementation "xla" or "auto".')
  segment_ids = None if key_valid is None else key_valid.astype(jnp.int32)
  return attention.mha(query, key, value, segment_ids, sm_scale=query.shape[-1] ** -0.5, causal=causal,
                       interpret=jax.default_backend() != 'gpu')


KERNELS = {'xla': xla_attention, 'cudnn': cudnn_attention, 'pallas': pallas_attention}


def pallas_unsupported(query) -> str | None:
  """Why the Pallas kernel cannot take these shapes, or None (block sizes must divide T, powers of two)."""
  length, head_dim = query.shape[1], query.shape[-1]
  if length < 16 or (length & (length - 1) and length % 128):
    return f'sequence length {length} is not a power of two >= 16 nor a multiple of 128'
  if head_dim < 16:
    return f'head dim {head_dim} < 16'
  return None


def choose(query, backend: str | None = None) -> tuple[str, str]:
  """('xla' | 'cudnn' | 'pallas', reason) for 'auto' on `backend` (default: JAX's) with query's shape and dtype."""
  backend = backend or jax.default_backend()
  if backend != 'gpu':
    return 'xla', f'no fused attention kernel for the {backend} backend in zoo'
  if query.dtype in HALF_DTYPES:
    if query.shape[-1] <= 128 and query.shape[-1] % 8 == 0:
      return 'cudnn', 'GPU, half precision, head dim <= 128'
    return 'xla', f'cuDNN flash attention needs head dim <= 128 and a multiple of 8 (got {query.shape[-1]})'
  return 'xla', ('float32 on GPU: cuDNN flash attention needs half precision and the Pallas kernel '
                 'multiplies in TF32 (~3e-4 relative error on H100)')


@functools.cache
def _log_choice(chosen: str, reason: str) -> None:
  logging.info('attention implementation auto -> %s (%s)', chosen, reason)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, key_valid: jax.Array | None = None,
                          *, causal: bool = False, implementation: str = 'auto') -> jax.Array:
  """softmax(q k^T / sqrt(d), masked) v per head, by the chosen kernel.

  Args:
    query: f32/bf16[B, Tq, H, D]. key, value: [B, Tk, H, D].
    key_valid: bool[B, Tk], False at padding keys (None: all real).
    causal: query i attends to keys 0..i only.
    implementation: 'xla', 'cudnn', 'pallas' or 'auto'.
  Returns:
    [B, Tq, H, D] in the query's dtype.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'Unknown attention implementation {implementation!r}; use one of: '
                     f'{", ".join(IMPLEMENTATIONS)}.')
  if implementation == 'auto':
    implementation, reason = choose(query)
    _log_choice(implementation, reason)
  return KERNELS[implementation](query, key, value, key_valid, causal)
