"""Pallas (Triton) kernels for the LSTM and GRU recurrences, forward and backward.

Same contract as zoo.kernels.recurrence (time-major `projected` [T, B, G*H],
`valid` [T, B, 1], `kernel` [H, G*H], `bias` [G*H]). One program per block of
BLOCK_B sequences runs the whole time loop on chip: per step and per tile of
hidden units it accumulates h_{t-1} W for the tile's gates over K tiles, applies
the gates with the cell update fused, and writes the tile of h_t into a state
buffer; a block-wide barrier then makes h_t visible for step t+1. The input
projections come precomputed (one matmul outside). The backward kernel runs the
reverse loop the same way: phase A turns (dh, dc) into the gate gradients dz_t
per tile, phase B computes dh_{t-1} = dz_t W^T; the weight gradient is then one
[H, T*B] x [T*B, G*H] matmul outside (as in zoo.kernels.recurrence 'fused').

Elementwise math and accumulation are f32 whatever the input dtype (f32 or
bf16); f32 matmuls run at full precision (no TF32), so results match the scan
reference to ~1e-5. Off GPU the kernels run in Pallas interpret mode (tests). Compiled on
an H100 they pass the same checks, but are 10-25x slower than 'fused' (4 busy SMs at B=64).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from zoo.kernels.cells import GATES, weight_grads

BLOCK_B = 16  # sequences per program (Triton dots need >= 16 rows)
MAX_TILE = 64  # hidden units per tile: bounds the [K, N] weight tile each dot loads


def tile_size(hidden: int) -> int | None:
  """Largest power-of-two tile <= MAX_TILE that splits `hidden` into >= 2 tiles of >= 16, or None.

  At least two tiles: with a single tile the compiled kernel read stale state after
  the barrier on an H100 (NaN from step 1; benchmarks/h100_kernels_run3.jsonl), while
  two or more tiles matched the scan.
  """
  tile = MAX_TILE
  while tile >= 16:
    if hidden % tile == 0 and hidden // tile >= 2:
      return tile
    tile //= 2
  return None


def unsupported_reason(hidden: int) -> str | None:
  """Why the kernel cannot take this hidden size on GPU, or None when it can."""
  if tile_size(hidden) is None:
    return f'hidden size {hidden} is not a multiple of 16 of at least 32'
  return None


def _barrier(interpret: bool) -> None:
  if not interpret:  # programs run one after another in interpret mode
    from jax.experimental.pallas import triton as plgpu  # pylint: disable=import-outside-toplevel
    plgpu.debug_barrier()


def _dot(a, b, *, trans_b=False):
  """a @ b (or a @ b^T) accumulated in f32; f32 operands at full precision (no TF32)."""
  precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return jnp.dot(a, b.T if trans_b else b, precision=precision, preferred_element_type=jnp.float32)


def _cols(ref, t, start, size):
  """ref[t, :, start:start+size] as f32."""
  return ref[t, :, pl.ds(start, size)].astype(jnp.float32)


def _recurrent_tiles(h_states, w_ref, t, column, hidden, gates, tile):
  """[sum_k h_t[:, k] W[k, g*H + column]] for each gate g: `gates` f32[bb, tile] tiles."""
  def accumulate(k, acc):
    h = h_states[t, :, pl.ds(k * tile, tile)].astype(w_ref.dtype)
    return tuple(a + _dot(h, w_ref[pl.ds(k * tile, tile), pl.ds(g * hidden + column, tile)])
                 for g, a in enumerate(acc))
  zeros = tuple(jnp.zeros((h_states.shape[1], tile), jnp.float32) for _ in range(gates))
  return jax.lax.fori_loop(0, hidden // tile, accumulate, zeros)


def _forward_kernel(proj_ref, valid_ref, w_ref, b_ref, out_ref, h_states, c_states, saved_ref, *,
                    cell, hidden, tile, interpret):
  gates = GATES[cell]
  length = proj_ref.shape[0]
  tiles = hidden // tile
  def zero_state(j, carry):
    zeros = jnp.zeros((h_states.shape[1], tile), jnp.float32)
    h_states[0, :, pl.ds(j * tile, tile)] = zeros
    c_states[0, :, pl.ds(j * tile, tile)] = zeros
    return carry
  jax.lax.fori_loop(0, tiles, zero_state, 0)
  _barrier(interpret)

  def time_step(t, carry):
    keep = valid_ref[t, :][:, None] > 0

    def hidden_tile(j, carry):
      column = j * tile
      rec = _recurrent_tiles(h_states, w_ref, t, column, hidden, gates, tile)
      zx = [_cols(proj_ref, t, g * hidden + column, tile) for g in range(gates)]
      bias = [b_ref[pl.ds(g * hidden + column, tile)].astype(jnp.float32)[None, :] for g in range(gates)]
      h = h_states[t, :, pl.ds(column, tile)]
      if cell == 'lstm':
        i, f, g, o = (jax.nn.sigmoid(zx[0] + rec[0] + bias[0]), jax.nn.sigmoid(zx[1] + rec[1] + bias[1]),
                      jnp.tanh(zx[2] + rec[2] + bias[2]), jax.nn.sigmoid(zx[3] + rec[3] + bias[3]))
        c = c_states[t, :, pl.ds(column, tile)]
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        c_states[t + 1, :, pl.ds(column, tile)] = jnp.where(keep, c_new, c)
        saved = (i, f, g, o)
      else:
        h_n = rec[2] + bias[2]
        r, u = jax.nn.sigmoid(zx[0] + rec[0] + bias[0]), jax.nn.sigmoid(zx[1] + rec[1] + bias[1])
        n = jnp.tanh(zx[2] + r * h_n)
        h_new = (1.0 - u) * n + u * h
        saved = (r, u, n, h_n)
      h_states[t + 1, :, pl.ds(column, tile)] = jnp.where(keep, h_new, h)
      out_ref[t, :, pl.ds(column, tile)] = jnp.where(keep, h_new, 0.0).astype(out_ref.dtype)
      for index, value in enumerate(saved):
        saved_ref[t, :, pl.ds(index * hidden + column, tile)] = value
      return carry

    jax.lax.fori_loop(0, tiles, hidden_tile, 0)
    _barrier(interpret)
    return carry

  jax.lax.fori_loop(0, length, time_step, 0)


def _backward_kernel(d_out_ref, valid_ref, w_ref, h_states, c_states, saved_ref, dh_last_ref, dc_last_ref,
                     dz_in_ref, dz_rec_ref, dh_states, dc_states, *, cell, hidden, tile, interpret):
  gates = GATES[cell]
  length = d_out_ref.shape[0]
  tiles = hidden // tile
  def last_state(j, carry):
    columns = pl.ds(j * tile, tile)
    dh_states[length, :, columns] = dh_last_ref[:, columns].astype(jnp.float32)
    dc_states[length, :, columns] = dc_last_ref[:, columns].astype(jnp.float32)
    return carry
  jax.lax.fori_loop(0, tiles, last_state, 0)
  _barrier(interpret)

  def time_step(step, carry):
    t = length - 1 - step
    keep = valid_ref[t, :][:, None] > 0

    def gate_gradients(j, carry):  # phase A: dz_t and the state pass-through, per hidden tile
      column = j * tile
      s = [saved_ref[t, :, pl.ds(index * hidden + column, tile)] for index in range(4)]
      dh = dh_states[t + 1, :, pl.ds(column, tile)]
      dh_new = jnp.where(keep, dh + _cols(d_out_ref, t, column, tile), 0.0)
      if cell == 'lstm':
        i, f, g, o = s
        dc = dc_states[t + 1, :, pl.ds(column, tile)]
        c_prev = c_states[t, :, pl.ds(column, tile)]
        tanh_c = jnp.tanh(f * c_prev + i * g)
        dc_new = jnp.where(keep, dc, 0.0) + dh_new * o * (1 - tanh_c * tanh_c)
        dz_rec = (dc_new * g * i * (1 - i), dc_new * c_prev * f * (1 - f), dc_new * i * (1 - g * g),
                  dh_new * tanh_c * o * (1 - o))
        dz_in = dz_rec
        dc_states[t, :, pl.ds(column, tile)] = dc_new * f + jnp.where(keep, 0.0, dc)
        dh_states[t, :, pl.ds(column, tile)] = jnp.where(keep, 0.0, dh)
      else:
        r, u, n, h_n = s
        h_prev = h_states[t, :, pl.ds(column, tile)]
        dn = dh_new * (1 - u) * (1 - n * n)
        dr = dn * h_n * r * (1 - r)
        du = dh_new * (h_prev - n) * u * (1 - u)
        dz_in, dz_rec = (dr, du, dn), (dr, du, dn * r)
        dh_states[t, :, pl.ds(column, tile)] = dh_new * u + jnp.where(keep, 0.0, dh)
      for g in range(gates):
        dz_in_ref[t, :, pl.ds(g * hidden + column, tile)] = dz_in[g].astype(dz_in_ref.dtype)
        dz_rec_ref[t, :, pl.ds(g * hidden + column, tile)] = dz_rec[g]
      return carry

    jax.lax.fori_loop(0, tiles, gate_gradients, 0)
    _barrier(interpret)

    def state_gradient(j, carry):  # phase B: dh_{t-1}[:, tile] += dz_t W[tile, :]^T
      column = j * tile
      def accumulate(k, acc):
        dz = dz_rec_ref[t, :, pl.ds(k * tile, tile)].astype(w_ref.dtype)
        return acc + _dot(dz, w_ref[pl.ds(column, tile), pl.ds(k * tile, tile)], trans_b=True)
      acc = jax.lax.fori_loop(0, gates * hidden // tile, accumulate,
                              jnp.zeros((dh_states.shape[1], tile), jnp.float32))
      dh_states[t, :, pl.ds(column, tile)] = dh_states[t, :, pl.ds(column, tile)] + acc
      return carry

    jax.lax.fori_loop(0, tiles, state_gradient, 0)
    _barrier(interpret)
    return carry

  jax.lax.fori_loop(0, length, time_step, 0)


def _specs(length, *widths):
  return [pl.BlockSpec((length, BLOCK_B, width), lambda b: (0, b, 0)) for width in widths]


def _pad_to(x, size, axis):
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, pad)


def padded_length(length: int) -> int:
  """Next power of two: Triton pads block dims to powers of two, so the time axis must be one.

  Padded steps are invalid (state kept, output 0), so they change nothing but cost time.
  """
  return 1 << max(length - 1, 0).bit_length()


def _interpret() -> bool:
  return jax.default_backend() != 'gpu'


def _forward(cell, projected, valid, kernel, bias):
  """Padded-batch forward: (outputs, h_states [T+1, Bp, H] f32, c_states, saved [T, Bp, 4H] f32)."""
  _, batch, _ = projected.shape
  length, hidden = padded_length(projected.shape[0]), kernel.shape[0]
  batch_padded = -(-batch // BLOCK_B) * BLOCK_B
  projected = _pad_to(_pad_to(projected, batch_padded, 1), length, 0)
  valid = _pad_to(_pad_to(valid[..., 0].astype(jnp.int32), batch_padded, 1), length, 0)
  f32 = jnp.float32
  interpret = _interpret()
  out, h_states, c_states, saved = pl.pallas_call(
      functools.partial(_forward_kernel, cell=cell, hidden=hidden, tile=tile_size(hidden) or hidden,
                        interpret=interpret),
      grid=(batch_padded // BLOCK_B,),
      in_specs=[*_specs(length, projected.shape[-1]), pl.BlockSpec((length, BLOCK_B), lambda b: (0, b)),
                pl.BlockSpec(kernel.shape, lambda b: (0, 0)), pl.BlockSpec(bias.shape, lambda b: (0,))],
      out_specs=[*_specs(length, hidden), *_specs(length + 1, hidden, hidden), *_specs(length, 4 * hidden)],
      out_shape=[jax.ShapeDtypeStruct((length, batch_padded, hidden), projected.dtype),
                 jax.ShapeDtypeStruct((length + 1, batch_padded, hidden), f32),
                 jax.ShapeDtypeStruct((length + 1, batch_padded, hidden), f32),
                 jax.ShapeDtypeStruct((length, batch_padded, 4 * hidden), f32)],
      interpret=interpret, name=f'{cell}_forward',
  )(projected, valid, kernel, bias)
  return out, h_states, c_states, saved, valid


def _final_state(cell, h_states, c_states, batch, dtype):
  state = (h_states[-1, :batch].astype(dtype),)
  return state + (c_states[-1, :batch].astype(dtype),) if cell == 'lstm' else state


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrence(cell, projected, valid, kernel, bias):
  out, h_states, c_states, _, _ = _forward(cell, projected, valid, kernel, bias)
  length, batch = projected.shape[:2]
  return out[:length, :batch], _final_state(cell, h_states, c_states, batch, projected.dtype)


def _recurrence_fwd(cell, projected, valid, kernel, bias):
  out, h_states, c_states, saved, valid_padded = _forward(cell, projected, valid, kernel, bias)
  length, batch = projected.shape[:2]
  result = out[:length, :batch], _final_state(cell, h_states, c_states, batch, projected.dtype)
  return result, (h_states, c_states, saved, valid_padded, kernel, bias, projected)


def _recurrence_bwd(cell, residuals, cotangents):
  h_states, c_states, saved, valid, kernel, bias, projected = residuals
  d_out, d_state = cotangents
  true_length, batch, width = projected.shape
  hidden = kernel.shape[0]
  length, batch_padded = valid.shape
  d_out = _pad_to(_pad_to(d_out, batch_padded, 1), length, 0)
  dh_last = _pad_to(d_state[0], batch_padded, 0)
  dc_last = _pad_to(d_state[1] if cell == 'lstm' else jnp.zeros_like(d_state[0]), batch_padded, 0)
  f32 = jnp.float32
  interpret = _interpret()
  state_spec = pl.BlockSpec((BLOCK_B, hidden), lambda b: (b, 0))
  dz_in, dz_rec, _, _ = pl.pallas_call(
      functools.partial(_backward_kernel, cell=cell, hidden=hidden, tile=tile_size(hidden) or hidden,
                        interpret=interpret),
      grid=(batch_padded // BLOCK_B,),
      in_specs=[*_specs(length, hidden), pl.BlockSpec((length, BLOCK_B), lambda b: (0, b)),
                pl.BlockSpec(kernel.shape, lambda b: (0, 0)), *_specs(length + 1, hidden, hidden),
                *_specs(length, 4 * hidden), state_spec, state_spec],
      out_specs=[*_specs(length, width, width), *_specs(length + 1, hidden, hidden)],
      out_shape=[jax.ShapeDtypeStruct((length, batch_padded, width), projected.dtype),
                 jax.ShapeDtypeStruct((length, batch_padded, width), f32),
                 jax.ShapeDtypeStruct((length + 1, batch_padded, hidden), f32),
                 jax.ShapeDtypeStruct((length + 1, batch_padded, hidden), f32)],
      interpret=interpret, name=f'{cell}_backward',
  )(d_out, valid, kernel, h_states, c_states, saved, dh_last, dc_last)
  d_kernel, d_bias = weight_grads(h_states[:length], dz_rec)
  return dz_in[:true_length, :batch], None, d_kernel.astype(kernel.dtype), d_bias.astype(bias.dtype)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def recurrence(cell: str, projected, valid, kernel, bias):
  """The Pallas LSTM/GRU recurrence (see the module docstring); returns (outputs, final state tuple)."""
  reason = unsupported_reason(kernel.shape[0])
  if reason is not None and not _interpret():
    raise ValueError(f'The Pallas recurrence cannot take this model: {reason}; use implementation "fused".')
  return _recurrence(cell, projected, valid, kernel, bias)
