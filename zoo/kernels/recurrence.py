"""LSTM and GRU recurrences with a hand-written backward pass, over input projections or their inputs.

Every implementation takes the same time-major arguments:
  projected: f32/bf16[T, B, G*H]  input projection x_t W_x + b_x for all steps (G = 4 LSTM, 3 GRU),
  valid:     bool[T, B, 1]        False at padding: the state is kept and the output is 0,
  kernel:    [H, G*H]             recurrent weight, bias: [G*H] recurrent bias,
and returns (outputs [T, B, H] (0 at pads), final state tuple: (h, c) for LSTM, (h,) for GRU).
`recurrent_layer` takes the projection's inputs x [T, B, D] and params instead of `projected`.

Implementations:
  'scan'   the reference: `lax.scan` over the cell, differentiated by JAX.
  'fused'  the same forward, with a `custom_vjp` whose backward loop does only the
           dz @ W^T matmul per step and accumulates the weight gradients as one
           [H, C*B] x [C*B, G*H] matmul per chunk of C steps (autodiff of scan does a
           small matmul per step). Both loops stop at the batch's longest sequence:
           a padded batch of SST-2 sentences is ~40% padding past its longest
           sentence, and those steps change nothing. `recurrent_layer` also moves the
           input projection into the loops, one [C*B, D] x [D, G*H] matmul per chunk,
           so that it and its gradients skip the padded tail too. C is per backend
           (`CHUNK_STEPS`). The SST-2 LSTM's train step on 2 CPU cores: 'scan' 178 ms,
           'fused' 98 ms; on an H100 (B=64, T 128-512, H 256-1024) 'fused' is 1.4-2.2x
           faster than 'scan'.
  'pallas' a Pallas kernel with the time loop inside (zoo.kernels.pallas_recurrence). It matches
           the reference in interpret mode (CPU tests) and, compiled, on an H100 (f32 forward 3e-7,
           gradients 1e-4 against a full-precision scan; bf16 4e-3), but it runs one program per
           16 sequences and is 10-25x slower there than 'fused' (benchmarks/README.md), so 'auto'
           never picks it.
  'auto'   'fused' on every backend.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import logging

from zoo.kernels import pallas_recurrence
from zoo.kernels.cells import GATES, gru_cell, gru_step_backward, lstm_cell, lstm_step_backward, weight_grads

IMPLEMENTATIONS = ('scan', 'fused', 'pallas', 'auto')
# Time steps per chunk in 'fused', by backend. On CPU a chunk's working set must stay in
# L2 (8 steps made the SST-2 LSTM step 1.4x slower than 4). On GPU each step is a few small
# kernels and a longer unrolled chunk saves loop overhead: on an H100 (B=64) 16 steps were
# 1.2-1.5x faster than 4, and 32 gained only 0-11% more (benchmarks/README.md).
CHUNK_STEPS = {'cpu': 4, 'gpu': 16}
DEFAULT_CHUNK_STEPS = 4


def active_steps(valid: jax.Array) -> jax.Array:
  """i32[]: 1 + the last time step where any sequence is real (0 if none). valid: bool[T, B, 1]."""
  active = jnp.any(valid, axis=tuple(range(1, valid.ndim)))
  return jnp.max(jnp.where(active, jnp.arange(1, valid.shape[0] + 1), 0)).astype(jnp.int32)


def scan_active(body, carry, xs, steps: jax.Array, *, reverse: bool = False):
  """`lax.scan(body, carry, xs, reverse=reverse)` over only the first `steps` entries of xs' leading axis

  (time steps, or chunks of them). The outputs stacked past `steps` are 0. This is exact for the masked
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


def _forward_step(cell, kernel, bias):
  """One masked step for `lax.scan`: (state, (zx, keep)) -> (state, (out, h_prev, *cell residuals))."""
  def step(state, inputs):
    zx, keep = inputs
    if cell == 'lstm':
      h_new, c_new, gates = lstm_cell(zx, *state, kernel, bias)
      new, saved = (h_new, c_new), (state[1], gates)
    else:
      h_new, saved_gru = gru_cell(zx, state[0], kernel, bias)
      new, saved = (h_new,), (saved_gru,)
    next_state = tuple(jnp.where(keep, n, old) for n, old in zip(new, state))
    return next_state, (jnp.where(keep, h_new, 0), state[0]) + saved
  return step


def _backward_step(cell, kernel):
  """One masked step backward, reversed `lax.scan`: (d_state, (d_out, keep, h_prev, *residuals)) ->
  (d_state, (dz_input, dz_recurrent)); dz_recurrent is None for the LSTM, where the two are equal."""
  def step(d_state, inputs):
    d_out, keep, h_prev, *saved = inputs
    if cell == 'lstm':
      dh, dc, dz = lstm_step_backward(*d_state, d_out, *saved, keep, kernel)
      return (dh, dc), (dz, None)
    dh, dz_input, dz_recurrent = gru_step_backward(*d_state, d_out, h_prev, *saved, keep, kernel)
    return (dh,), (dz_input, dz_recurrent)
  return step


def _initial_state(cell, x, kernel):
  """Zero state tuple: (h, c) for the LSTM, (h,) for the GRU; each [B, H] in the dtype of x and kernel."""
  dtype = jnp.result_type(x, kernel)
  return tuple(jnp.zeros((x.shape[1], kernel.shape[0]), dtype) for _ in range(2 if cell == 'lstm' else 1))


def scan_reference(cell, projected, valid, kernel, bias):
  """The reference recurrence: `lax.scan` over the masked cell step, differentiated by JAX."""
  state, (outputs, *_) = jax.lax.scan(_forward_step(cell, kernel, bias), _initial_state(cell, projected, kernel),
                                      (projected, valid))
  return outputs, state


def chunk_steps(backend: str | None = None) -> int:
  """'fused' time steps per chunk on `backend` (default: JAX's)."""
  return CHUNK_STEPS.get(backend or jax.default_backend(), DEFAULT_CHUNK_STEPS)


def _to_chunks(x, chunk: int):
  """[T, ...] -> [ceil(T / chunk), chunk, ...], padded at the end with 0 (False for masks)."""
  x = jnp.pad(x, [(0, -x.shape[0] % chunk)] + [(0, 0)] * (x.ndim - 1))
  return x.reshape((-1, chunk) + x.shape[1:])


def _from_chunks(x, length: int):
  """[N, chunk, ...] -> [length, ...]: the inverse of `_to_chunks`."""
  return x.reshape((-1,) + x.shape[2:])[:length]


def _project(x, input_kernel, input_bias):
  """x: [T or C, B, D] -> x @ input_kernel + input_bias: [T or C, B, G*H]; x itself when input_kernel is None."""
  if input_kernel is None:
    return x
  return jnp.einsum('cbd,dg->cbg', x, input_kernel) + input_bias


def _fused_forward(cell, chunk, x, valid, input_kernel, input_bias, kernel, bias):
  """The forward loop over the chunks up to the longest sequence.

  Returns (outputs [T, B, H], state, residuals for `_fused_bwd`: chunked (h_prev, *cell residuals),
  chunked x and valid, and the number of active chunks).
  """
  step = _forward_step(cell, kernel, bias)

  def chunk_body(state, chunk):
    x_chunk, valid_chunk = chunk
    return jax.lax.scan(step, state, (_project(x_chunk, input_kernel, input_bias), valid_chunk), unroll=True)

  chunks = (_to_chunks(x, chunk), _to_chunks(valid, chunk))
  active = active_steps(chunks[1])
  state, (outputs, *saved) = scan_active(chunk_body, _initial_state(cell, x, kernel), chunks, active)
  return _from_chunks(outputs, x.shape[0]), state, (tuple(saved), *chunks, active)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fused(cell, chunk, x, valid, input_kernel, input_bias, kernel, bias):
  """The 'fused' recurrence of `cell` over x @ input_kernel + input_bias (over x when input_kernel is None),
  in chunks of `chunk` steps."""
  outputs, state, _ = _fused_forward(cell, chunk, x, valid, input_kernel, input_bias, kernel, bias)
  return outputs, state


def _fused_fwd(cell, chunk, x, valid, input_kernel, input_bias, kernel, bias):
  outputs, state, residuals = _fused_forward(cell, chunk, x, valid, input_kernel, input_bias, kernel, bias)
  return (outputs, state), residuals + (input_kernel, input_bias, kernel, bias)


def _fused_bwd(cell, chunk, residuals, cotangents):
  saved, x_chunks, valid_chunks, active, input_kernel, input_bias, kernel, bias = residuals
  d_outputs, d_state = cotangents
  step = _backward_step(cell, kernel)
  projects = input_kernel is not None

  def chunk_body(carry, chunk):
    d_state, grads = carry
    d_out, valid_chunk, x_chunk, h_prev, *saved_chunk = chunk
    d_state, (dz_input, dz_recurrent) = jax.lax.scan(step, d_state, (d_out, valid_chunk, h_prev, *saved_chunk),
                                                     reverse=True, unroll=True)
    dz_recurrent = dz_input if dz_recurrent is None else dz_recurrent
    chunk_grads = weight_grads(h_prev, dz_recurrent)
    if projects:
      chunk_grads += weight_grads(x_chunk, dz_input)
      dz_input = jnp.einsum('cbg,dg->cbd', dz_input, input_kernel).astype(x_chunks.dtype)
    return (d_state, jax.tree.map(jnp.add, grads, chunk_grads)), dz_input

  weights = (kernel, bias) + ((input_kernel, input_bias) if projects else ())
  grads = tuple(jnp.zeros(w.shape, jnp.float32) for w in weights)
  chunks = (_to_chunks(d_outputs, chunk), valid_chunks, x_chunks) + saved
  (_, grads), dx = scan_active(chunk_body, (d_state, grads), chunks, active, reverse=True)
  d_kernel, d_bias, *d_input = (g.astype(w.dtype) for g, w in zip(grads, weights))
  d_input_kernel, d_input_bias = d_input or (None, None)
  return _from_chunks(dx, d_outputs.shape[0]), None, d_input_kernel, d_input_bias, d_kernel, d_bias


_fused.defvjp(_fused_fwd, _fused_bwd)


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


def _check_cell(cell: str) -> None:
  if cell not in GATES:
    raise ValueError(f'Unknown cell {cell!r}; use one of: {", ".join(GATES)}.')


def recurrence(cell: str, projected, valid, kernel, bias, *, implementation: str = 'auto',
               chunk: int | None = None):
  """Runs `cell` ('lstm' or 'gru') over time-major `projected` with the chosen implementation.

  chunk: 'fused' time steps per chunk (None: `chunk_steps()` for the backend).
  """
  _check_cell(cell)
  implementation = resolve(implementation)
  if implementation == 'pallas':
    return pallas_recurrence.recurrence(cell, projected, valid, kernel, bias)
  if implementation == 'scan':
    return scan_reference(cell, projected, valid, kernel, bias)
  return _fused(cell, chunk or chunk_steps(), projected, valid, None, None, kernel, bias)


def recurrent_layer(cell: str, x, valid, input_kernel, input_bias, kernel, bias, *, implementation: str = 'auto',
                    chunk: int | None = None):
  """`recurrence` over the input projection x @ input_kernel + input_bias.

  x: [T, B, D], input_kernel: [D, G*H], input_bias: [G*H]; the rest as in `recurrence`.
  'fused' computes the projection chunk by chunk inside its loops, so that its
  matmuls and their gradients also stop at the batch's longest sequence; the
  other implementations project all T steps in one matmul first.
  """
  _check_cell(cell)
  implementation = resolve(implementation)
  if implementation == 'fused':
    return _fused(cell, chunk or chunk_steps(), x, valid, input_kernel, input_bias, kernel, bias)
  return recurrence(cell, _project(x, input_kernel, input_bias), valid, kernel, bias, implementation=implementation)
