"""Scaled dot-product attention: the one function every zoo attention layer calls.

`implementation` picks the kernel:
  'xla'    the jnp reference below: softmax(q k^T / sqrt(d), masked) v, softmax in f32.
  'cudnn'  jax.nn.dot_product_attention's cuDNN flash attention (NVIDIA GPUs, f16/bf16).
  'pallas' the Pallas flash attentions JAX ships for GPUs, forward and backward kernels:
           on Hopper (H100/H200), for float16 without masks, the Mosaic GPU
           FlashAttention-3 kernel (pallas.ops.gpu.attention_mgpu: wgmma, TMA, warp
           specialisation); otherwise the Triton one (pallas.ops.gpu.attention.mha, which takes
           padding and causal masks); interpret mode of the Triton kernel off GPU.
  'auto'   per backend, shape and dtype (see `choose`), falling back to 'xla' with a logged reason;
           'pallas' is never picked automatically: on an H100 the Triton kernel is 1.4-3.7x and
           FA3 1.1-1.5x slower than cuDNN (benchmarks/README.md), and the f32 path uses TF32.

Masks: `valid` marks real (non-padding) keys; `causal` lets query i see keys <= i;
`directional` splits the heads in two halves (DiSAN's forward and backward masks, Shen et
al. 2018): the first half sees keys <= i, the second keys >= i. The 'xla' reference masks
per head; the other kernels run the second half causally over each sequence's real steps
reversed, which needs the padding at the end (as the zoo's text pipeline puts it).
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


def attention_weights(query, key, valid=None, causal=False, directional=False):
  """softmax(q k^T / sqrt(d), masked) in f32: query [B, Tq, H, D], key [B, Tk, H, D] -> f32[B, H, Tq, Tk]."""
  scale = query.shape[-1] ** -0.5
  logits = jnp.einsum('bqhd,bkhd->bhqk', query * scale, key).astype(jnp.float32)
  mask = _mask(valid, causal, directional, query.shape[1], key.shape[1], query.shape[2])
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


def xla_attention(query, key, value, valid=None, causal=False, directional=False):
  """The reference. query: [B, Tq, H, D], key/value: [B, Tk, H, D], valid: bool[B, Tk] -> [B, Tq, H, D]."""
  weights = attention_weights(query, key, valid, causal, directional).astype(value.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, value)


def _mask(valid, causal, directional, q_len, k_len, num_heads):
  """bool[B or 1, H or 1, Tq, Tk] or None."""
  mask = None if valid is None else valid[:, None, None, :]
  if causal or directional:
    ones = jnp.ones((q_len, k_len), bool)
    lower = jnp.tril(ones)
    if directional:  # heads [:H/2] look back, heads [H/2:] ahead
      steps = jnp.where(jnp.arange(num_heads)[:, None, None] < num_heads // 2, lower, jnp.triu(ones))[None]
    else:
      steps = lower[None, None]
    mask = steps if mask is None else mask & steps
  return mask


def reverse_real_steps(x: jax.Array, valid: jax.Array | None) -> jax.Array:
  """x [B, T, ...] with each row's real steps (a prefix: valid bool[B, T]) in reverse order, padding in place.

  Its own inverse. None for valid: every step is real.
  """
  steps = jnp.arange(x.shape[1])
  length = x.shape[1] if valid is None else valid.sum(1, keepdims=True)
  order = jnp.broadcast_to(jnp.where(steps < length, length - 1 - steps, steps), x.shape[:2])
  return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)


def directional_by_reversal(kernel, query, key, value, valid=None):
  """Directional heads from a causal kernel: the second half of the heads over the real steps reversed."""
  half = query.shape[2] // 2
  forward = kernel(query[:, :, :half], key[:, :, :half], value[:, :, :half], valid, True)
  backward = kernel(*(reverse_real_steps(x[:, :, half:], valid) for x in (query, key, value)), valid, True)
  return jnp.concatenate([forward, reverse_real_steps(backward, valid)], axis=2)


def cudnn_attention(query, key, value, valid=None, causal=False):
  """cuDNN flash attention through jax.nn.dot_product_attention (GPU, f16/bf16)."""
  mask = None
  if valid is not None:  # cuDNN takes the mask only at its full [B, 1, Tq, Tk] shape
    mask = jnp.broadcast_to(valid[:, None, None, :], (key.shape[0], 1, query.shape[1], key.shape[1]))
  return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=causal, implementation='cudnn')


# Mosaic GPU FlashAttention-3 tiles per head dim: forward (block_q per warpgroup, two
# warpgroups per program; block_kv; TMA pipeline depth) and backward (dk/dv and dq passes).
HOPPER_TUNING = {
    64: dict(block_q=64, block_kv=128, max_concurrent_steps=2,
             block_q_dkv=64, block_kv_dkv=64, block_q_dq=64, block_kv_dq=64),
    128: dict(block_q=64, block_kv=128, max_concurrent_steps=2,
              block_q_dkv=64, block_kv_dkv=64, block_q_dq=64, block_kv_dq=64),
}


def hopper_unsupported(query, valid=None, causal=False) -> str | None:
  """Why the Mosaic GPU (Hopper) kernel cannot take this call, or None when it can."""
  device = jax.devices()[0]
  if jax.default_backend() != 'gpu' or not str(getattr(device, 'compute_capability', '')).startswith('9'):
    return 'not a Hopper GPU'
  if query.dtype != jnp.float16:
    return f'{query.dtype} (the kernel\'s backward pass takes float16 only, as of jax 0.11)'
  if valid is not None or causal:
    return 'masks (the kernel has no padding mask and no causal backward pass)'
  tuning = HOPPER_TUNING.get(query.shape[-1])
  if tuning is None:
    return f'head dim {query.shape[-1]} (tuned for {sorted(HOPPER_TUNING)})'
  blocks = [2 * tuning['block_q'], tuning['block_kv'], tuning['block_q_dkv'], tuning['block_kv_dkv']]
  if any(query.shape[1] % block for block in blocks):
    return f'sequence length {query.shape[1]} is not a multiple of {max(blocks)}'
  return None


def hopper_attention(query, key, value):
  """Mosaic GPU FlashAttention-3 (no masks); q is pre-scaled, the kernel applies no 1/sqrt(d)."""
  from jax.experimental.pallas.ops.gpu import attention_mgpu  # pylint: disable=import-outside-toplevel
  config = attention_mgpu.TuningConfig(**HOPPER_TUNING[query.shape[-1]])
  return attention_mgpu.attention(query * jnp.asarray(query.shape[-1] ** -0.5, query.dtype), key, value, config)


def pallas_attention(query, key, value, valid=None, causal=False):
  """JAX's Pallas flash attention for GPUs: FA3 on Hopper where it fits, else Triton with padding as segment ids."""
  from jax.experimental.pallas.ops.gpu import attention  # pylint: disable=import-outside-toplevel
  if hopper_unsupported(query, valid, causal) is None:
    return hopper_attention(query, key, value)
  reason = pallas_unsupported(query)
  if reason is not None:
    raise ValueError(f'Pallas attention cannot take this input: {reason}; use implementation "xla" or "auto".')
  segment_ids = None if valid is None else valid.astype(jnp.int32)
  return attention.mha(query, key, value, segment_ids, sm_scale=query.shape[-1] ** -0.5, causal=causal,
                       interpret=jax.default_backend() != 'gpu')


FUSED_KERNELS = {'cudnn': cudnn_attention, 'pallas': pallas_attention}  # (q, k, v, valid, causal)


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


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, valid: jax.Array | None = None,
                          *, causal: bool = False, directional: bool = False,
                          implementation: str = 'auto') -> jax.Array:
  """softmax(q k^T / sqrt(d), masked) v per head, by the chosen kernel.

  Args:
    query: f32/bf16[B, Tq, H, D]. key, value: [B, Tk, H, D].
    valid: bool[B, Tk], False at padding keys (None: all real); with `directional`
      and a kernel other than 'xla', the padding must come after the real keys.
    causal: query i attends to keys 0..i only.
    directional: heads [:H/2] attend to keys 0..i, heads [H/2:] to keys i.. (self-attention, H even).
    implementation: 'xla', 'cudnn', 'pallas' or 'auto'.
  Returns:
    [B, Tq, H, D] in the query's dtype.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'Unknown attention implementation {implementation!r}; use one of: '
                     f'{", ".join(IMPLEMENTATIONS)}.')
  if directional and (causal or query.shape[2] % 2 or query.shape[1] != key.shape[1]):
    raise ValueError(f'Directional attention splits the heads between forward and backward self-attention; '
                     f'got {query.shape[2]} heads, causal={causal}, {query.shape[1]} queries and {key.shape[1]} '
                     'keys: use an even number of heads, causal=False and keys of the queries\' length.')
  if implementation == 'auto':
    implementation, reason = choose(query)
    _log_choice(implementation, reason)
  if implementation == 'xla':
    return xla_attention(query, key, value, valid, causal, directional)
  kernel = FUSED_KERNELS[implementation]
  if directional:
    return directional_by_reversal(kernel, query, key, value, valid)
  return kernel(query, key, value, valid, causal)
