"""Scaled dot-product attention: the one function every zoo attention layer calls.

Fused kernels (Pallas, cuDNN) go behind `dot_product_attention`; this jnp
version is the reference they are checked against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          mask: jax.Array | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(d) masked) v, per head.

  Args:
    query: f32/bf16[B, Tq, H, D]. key, value: [B, Tk, H, D].
    mask: bool, broadcastable to [B, H, Tq, Tk]; False blocks attention.
  Returns:
    [B, Tq, H, D] in the query's dtype (softmax computed in f32).
  """
  scale = query.shape[-1] ** -0.5
  logits = jnp.einsum('bqhd,bkhd->bhqk', query * scale, key).astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, value)
