"""LSTM and GRU cell maths shared by every recurrence implementation: one step forward, one step backward,
and the weight gradients over many steps (gate order i, f, g, o for the LSTM; r, u, n for the GRU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

GATES = {'lstm': 4, 'gru': 3}


def lstm_cell(zx, h, c, kernel, bias):
  """One LSTM step (gate order i, f, g, o). zx: [B, 4H], h, c: [B, H] -> (h_new, c_new, gates [B, 4H])."""
  z = zx + h @ kernel + bias
  i, f, g, o = jnp.split(z, 4, axis=-1)
  i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
  c_new = f * c + i * g
  return o * jnp.tanh(c_new), c_new, jnp.concatenate([i, f, g, o], axis=-1)


def gru_cell(zx, h, kernel, bias):
  """One GRU step as in cuDNN (the reset gate scales the recurrent candidate term).

  zx: [B, 3H], h: [B, H] -> (h_new [B, H], saved [B, 4H] = r, u, n, recurrent candidate term).
  """
  x_r, x_u, x_n = jnp.split(zx, 3, axis=-1)
  h_r, h_u, h_n = jnp.split(h @ kernel + bias, 3, axis=-1)
  r, u = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_u + h_u)
  n = jnp.tanh(x_n + r * h_n)
  return (1.0 - u) * n + u * h, jnp.concatenate([r, u, n, h_n], axis=-1)


def lstm_step_backward(dh, dc, d_out, c_prev, gates, keep, kernel):
  """Backward of one masked LSTM step: returns (dh_prev, dc_prev, dz [B, 4H])."""
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  tanh_c = jnp.tanh(f * c_prev + i * g)
  dh_new = jnp.where(keep, dh + d_out, 0)
  dc_new = jnp.where(keep, dc, 0) + dh_new * o * (1 - tanh_c * tanh_c)
  dz = jnp.concatenate([dc_new * g * i * (1 - i), dc_new * c_prev * f * (1 - f),
                        dc_new * i * (1 - g * g), dh_new * tanh_c * o * (1 - o)], axis=-1)
  dh_prev = dz @ kernel.T + jnp.where(keep, 0, dh)
  dc_prev = dc_new * f + jnp.where(keep, 0, dc)
  return dh_prev, dc_prev, dz


def gru_step_backward(dh, d_out, h_prev, saved, keep, kernel):
  """Backward of one masked GRU step: returns (dh_prev, dz_input [B, 3H], dz_recurrent [B, 3H])."""
  r, u, n, h_n = jnp.split(saved, 4, axis=-1)
  dh_new = jnp.where(keep, dh + d_out, 0)
  dn = dh_new * (1 - u) * (1 - n * n)
  dr = dn * h_n * r * (1 - r)
  du = dh_new * (h_prev - n) * u * (1 - u)
  dz_input = jnp.concatenate([dr, du, dn], axis=-1)
  dz_recurrent = jnp.concatenate([dr, du, dn * r], axis=-1)
  dh_prev = dz_recurrent @ kernel.T + dh_new * u + jnp.where(keep, 0, dh)
  return dh_prev, dz_input, dz_recurrent


def weight_grads(h_prev, dz_recurrent):
  """dW = sum_t h_{t-1}^T dz_t as one matmul, db = sum dz. h_prev: [T, B, H], dz: [T, B, G*H]."""
  d_kernel = jnp.einsum('tbh,tbg->hg', h_prev, dz_recurrent, preferred_element_type=jnp.float32)
  return d_kernel, dz_recurrent.sum((0, 1), dtype=jnp.float32)
