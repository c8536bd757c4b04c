"""LSTM and GRU recurrences over precomputed input projections, with a hand-written backward pass.

Every implementation takes the same time-major arguments:
  projected: f32/bf16[T, B, G*H]  input projection x_t W_x + b_x for all steps (G = 4 LSTM, 3 GRU),
  valid:     bool[T, B, 1]        False at padding: the state is kept and the output is 0,
  kernel:    [H, G*H]             recurrent weight, bias: [G*H] recurrent bias,
and returns (outputs [T, B, H] (0 at pads), final state tuple: (h, c) for LSTM, (h,) for GRU).

Implementations:
  'scan'   the reference: `lax.scan` over the cell, differentiated by JAX.
  'fused'  the same forward, with a `custom_vjp` whose backward loop does only the
           dz @ W^T matmul per step and computes the weight gradient afterwards as ONE
           [H, T*B] x [T*B, G*H] matmul (what cuDNN does). On a 2-core CPU this roughly
           halves the LSTM train step, because autodiff of scan accumulates dW with a
           small matmul inside every step. Both of its loops also stop at the batch's
           longest sequence (`scan_active`): a padded batch of SST-2 sentences is ~40%
           padding past its longest sentence, and those steps change nothing.
  'pallas' a Pallas kernel with the time loop inside (zoo.kernels.pallas_recurrence). It matches
           the reference in interpret mode (CPU tests) and, compiled, on an H100 (f32 forward 3e-7,
           gradients 1e-4 against a full-precision scan; bf16 4e-3), but it runs one program per
           16 sequences and is 10-25x slower there than 'fused' (benchmarks/README.md), so 'auto'
           never picks it.
  'auto'   'fused' on every backend: on an H100 it is 1.6-2.0x faster than 'scan'.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import logging

GATES = {'lstm': 4, 'gru': 3}
IMPLEMENTATIONS = ('scan', 'fused', 'pallas', 'auto')


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


def active_steps(valid: jax.Array) -> jax.Array:
  """i32[]: 1 + the last time step where any sequence is real (0 if none). valid: bool[T, B, 1]."""
  active = jnp.any(valid, axis=tuple(range(1, valid.ndim)))
  return jnp.max(jnp.where(active, jnp.arange(1, valid.shape[0] + 1), 0)).astype(jnp.int32)


def scan_active(body, carry, xs, steps: jax.Array, *, reverse: bool = False):
  """`lax.scan(body, carry, xs, reverse=reverse)` over only the first `steps` of the T time steps.

  The outputs stacked for steps past `steps` are 0. This is exact for the masked
  recurrences here: at a step where every sequence is padding the carry passes
  through unchanged and the outputs (or gradients) are 0. Not differentiable by JAX
  (a loop of dynamic length); the 'fused' recurrences have hand-written backward passes.
  """
  length = jax.tree.leaves(xs)[0].shape[0]
  first = jax.tree.map(lambda x: x[0], xs)
  shapes = jax.eval_shape(lambda c, x: body(c, x)[1], carry, first)
  stacked = jax.tree.map(lambda s: jnp.zeros((length,) + s.shape, s.dtype), shapes)

  def loop_body(i, loop_carry):
    carry, stacked = loop_carry
    t = steps - 1 - i if reverse else i
    carry, out = body(carry, jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, t, keepdims=False), xs))
    stacked = jax.tree.map(lambda buffer, y: jax.lax.dynamic_update_index_in_dim(buffer, y, t, 0), stacked, out)
    return carry, stacked

  return jax.lax.fori_loop(0, steps, loop_body, (carry, stacked))


def _loop(active_only: bool, valid):
  """The time loop: `scan_active` up to the longest sequence, or the whole `lax.scan` (differentiable)."""
  if active_only:
    return functools.partial(scan_active, steps=active_steps(valid))
  return jax.lax.scan


def _zeros_state(projected, hidden):
  return jnp.zeros(projected.shape[1:2] + (hidden,), projected.dtype)


def _lstm_scan(projected, valid, kernel, bias, *, with_residuals, active_only=False):
  def step(carry, inputs):
    h, c = carry
    zx, keep = inputs
    h_new, c_new, gates = lstm_cell(zx, h, c, kernel, bias)
    out = jnp.where(keep, h_new, 0)
    carry = jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)
    return carry, ((out, h, c, gates) if with_residuals else out)

  zeros = _zeros_state(projected, kernel.shape[0])
  return _loop(active_only, valid)(step, (zeros, zeros), (projected, valid))


def _gru_scan(projected, valid, kernel, bias, *, with_residuals, active_only=False):
  def step(carry, inputs):
    h, = carry
    zx, keep = inputs
    h_new, saved = gru_cell(zx, h, kernel, bias)
    out = jnp.where(keep, h_new, 0)
    return (jnp.where(keep, h_new, h),), ((out, h, saved) if with_residuals else out)

  return _loop(active_only, valid)(step, (_zeros_state(projected, kernel.shape[0]),), (projected, valid))


def lstm_scan(projected, valid, kernel, bias, *, active_only=False):
  """Reference LSTM recurrence (see module docstring)."""
  state, outputs = _lstm_scan(projected, valid, kernel, bias, with_residuals=False, active_only=active_only)
  return outputs, state


def gru_scan(projected, valid, kernel, bias, *, active_only=False):
  """Reference GRU recurrence (see module docstring)."""
  state, outputs = _gru_scan(projected, valid, kernel, bias, with_residuals=False, active_only=active_only)
  return outputs, state


def weight_grads(h_prev, dz_recurrent):
  """dW = sum_t h_{t-1}^T dz_t as one matmul, db = sum dz. h_prev: [T, B, H], dz: [T, B, G*H]."""
  d_kernel = jnp.einsum('tbh,tbg->hg', h_prev, dz_recurrent, preferred_element_type=jnp.float32)
  return d_kernel, dz_recurrent.sum((0, 1), dtype=jnp.float32)


@jax.custom_vjp
def lstm_fused(projected, valid, kernel, bias):
  """LSTM recurrence with a hand-written backward pass (see module docstring)."""
  return lstm_scan(projected, valid, kernel, bias, active_only=True)


def _lstm_fused_fwd(projected, valid, kernel, bias):
  state, (outputs, h_prev, c_prev, gates) = _lstm_scan(projected, valid, kernel, bias, with_residuals=True,
                                                       active_only=True)
  return (outputs, state), (h_prev, c_prev, gates, valid, kernel, bias)


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


def _lstm_fused_bwd(residuals, cotangents):
  h_prev, c_prev, gates, valid, kernel, bias = residuals
  d_outputs, (dh_last, dc_last) = cotangents

  def step(carry, inputs):
    dh, dc = carry
    dh, dc, dz = lstm_step_backward(dh, dc, *inputs, kernel)
    return (dh, dc), dz

  _, dz = scan_active(step, (dh_last, dc_last), (d_outputs, c_prev, gates, valid), active_steps(valid),
                      reverse=True)
  d_kernel, d_bias = weight_grads(h_prev, dz)
  return dz, None, d_kernel.astype(kernel.dtype), d_bias.astype(bias.dtype)


lstm_fused.defvjp(_lstm_fused_fwd, _lstm_fused_bwd)


@jax.custom_vjp
def gru_fused(projected, valid, kernel, bias):
  """GRU recurrence with a hand-written backward pass (see module docstring)."""
  return gru_scan(projected, valid, kernel, bias, active_only=True)


def _gru_fused_fwd(projected, valid, kernel, bias):
  state, (outputs, h_prev, saved) = _gru_scan(projected, valid, kernel, bias, with_residuals=True,
                                              active_only=True)
  return (outputs, state), (h_prev, saved, valid, kernel, bias)


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


def _gru_fused_bwd(residuals, cotangents):
  h_prev, saved, valid, kernel, bias = residuals
  d_outputs, (dh_last,) = cotangents

  def step(dh, inputs):
    dh, dz_input, dz_recurrent = gru_step_backward(dh, *inputs, kernel)
    return dh, (dz_input, dz_recurrent)

  _, (dz_input, dz_recurrent) = scan_active(step, dh_last, (d_outputs, h_prev, saved, valid), active_steps(valid),
                                            reverse=True)
  d_kernel, d_bias = weight_grads(h_prev, dz_recurrent)
  return dz_input, None, d_kernel.astype(kernel.dtype), d_bias.astype(bias.dtype)


gru_fused.defvjp(_gru_fused_fwd, _gru_fused_bwd)


def resolve(implementation: str) -> str:
  """'auto' -> 'fused' on every backend (logged once with the reason); others pass through."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'Unknown recurrence implementation {implementation!r}; use one of: '
                     f'{", ".join(IMPLEMENTATIONS)}.')
  if implementation != 'auto':
    return implementation
  _log_choice(jax.default_backend())
  return 'fused'


@functools.cache
def _log_choice(backend: str) -> None:
  logging.info('recurrence implementation auto -> fused on %s (the Pallas kernel is 10-25x slower on GPU)', backend)


def recurrence(cell: str, projected, valid, kernel, bias, *, implementation: str = 'auto'):
  """Runs `cell` ('lstm' or 'gru') over time-major `projected` with the chosen implementation."""
  if cell not in GATES:
    raise ValueError(f'Unknown cell {cell!r}; use one of: {", ".join(GATES)}.')
  implementation = resolve(implementation)
  if implementation == 'pallas':
    from zoo.kernels import pallas_recurrence  # pylint: disable=import-outside-toplevel
    return pallas_recurrence.recurrence(cell, projected, valid, kernel, bias)
  table = {('lstm', 'scan'): lstm_scan, ('lstm', 'fused'): lstm_fused,
           ('gru', 'scan'): gru_scan, ('gru', 'fused'): gru_fused}
  return table[cell, implementation](projected, valid, kernel, bias)
