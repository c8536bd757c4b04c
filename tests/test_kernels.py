"""zoo.kernels: every recurrence and attention implementation matches its reference, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.kernels import recurrence


def _recurrence_inputs(cell: str, dtype, length=7, batch=5, hidden=8, seed=0):
  gates = recurrence.GATES[cell]
  keys = jax.random.split(jax.random.key(seed), 4)
  projected = jax.random.normal(keys[0], (length, batch, gates * hidden)).astype(dtype)
  kernel = (0.4 * jax.random.normal(keys[1], (hidden, gates * hidden))).astype(dtype)
  bias = (0.1 * jax.random.normal(keys[2], (gates * hidden,))).astype(dtype)
  lengths = jnp.array([length, 1, 3, length - 1, 2][:batch])  # ragged, one full-length row
  valid = (jnp.arange(length)[:, None] < lengths[None, :])[..., None]
  return projected, valid, kernel, bias


def _loss_and_grads(cell, implementation, projected, valid, kernel, bias):
  """A loss that reads every output and the final state(s), and its gradients."""
  def loss(projected, kernel, bias):
    outputs, state = recurrence.recurrence(cell, projected, valid, kernel, bias, implementation=implementation)
    weights = jnp.linspace(-1.0, 1.0, outputs.size).reshape(outputs.shape)
    return (outputs.astype(jnp.float32) * weights).sum() + sum(
        (s.astype(jnp.float32) ** 2).sum() for s in state)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(projected, kernel, bias)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
@pytest.mark.parametrize('implementation', ['fused', 'pallas'])
def test_recurrence_matches_scan_reference_f32(cell, implementation):
  inputs = _recurrence_inputs(cell, jnp.float32)
  reference = _loss_and_grads(cell, 'scan', *inputs)
  candidate = _loss_and_grads(cell, implementation, *inputs)
  for want, got in zip(jax.tree.leaves(reference), jax.tree.leaves(candidate)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
@pytest.mark.parametrize('implementation', ['fused', 'pallas'])
def test_recurrence_matches_scan_reference_bf16(cell, implementation):
  inputs = _recurrence_inputs(cell, jnp.bfloat16)
  reference = _loss_and_grads(cell, 'scan', *[x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x
                                              for x in inputs])
  candidate = _loss_and_grads(cell, implementation, *inputs)
  for want, got in zip(jax.tree.leaves(reference), jax.tree.leaves(candidate)):
    scale = float(jnp.abs(want).max()) + 1e-6
    np.testing.assert_allclose(np.asarray(got, np.float32) / scale, np.asarray(want) / scale, atol=3e-2)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_padding_never_leaks_into_outputs_or_state(cell):
  projected, valid, kernel, bias = _recurrence_inputs(cell, jnp.float32)
  garbage = projected + 100.0 * (~valid)  # change only the padded steps
  for implementation in ('scan', 'fused'):
    out, state = recurrence.recurrence(cell, projected, valid, kernel, bias, implementation=implementation)
    out2, state2 = recurrence.recurrence(cell, garbage, valid, kernel, bias, implementation=implementation)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(out * ~valid, 0.0)
    for s, s2 in zip(state, state2):
      np.testing.assert_array_equal(s, s2)


def test_auto_picks_fused_on_cpu_and_unknown_names_fail():
  assert jax.default_backend() == 'cpu'
  assert recurrence.resolve('auto') == 'fused'
  with pytest.raises(ValueError, match='scan, fused, pallas, auto'):
    recurrence.resolve('cudnn')
  with pytest.raises(ValueError, match='lstm, gru'):
    recurrence.recurrence('rnn', *_recurrence_inputs('lstm', jnp.float32))
