"""zoo.kernels: every recurrence and attention implementation matches its reference, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.kernels import pallas_recurrence, recurrence


def _recurrence_inputs(cell: str, dtype, length=7, batch=5, hidden=8, seed=0, longest=None):
  gates = recurrence.GATES[cell]
  keys = jax.random.split(jax.random.key(seed), 4)
  projected = jax.random.normal(keys[0], (length, batch, gates * hidden)).astype(dtype)
  kernel = (0.4 * jax.random.normal(keys[1], (hidden, gates * hidden))).astype(dtype)
  bias = (0.1 * jax.random.normal(keys[2], (gates * hidden,))).astype(dtype)
  longest = length if longest is None else longest
  lengths = jnp.clip(jnp.array([longest, 1, 3, longest - 1, 2][:batch]), 0, longest)  # ragged, max `longest`
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
@pytest.mark.parametrize('longest', [4, 0])
def test_fused_stops_at_the_longest_sequence_and_still_matches_the_reference(cell, longest):
  """'fused' loops only over the first `longest` steps (none for an all-padding batch)."""
  inputs = _recurrence_inputs(cell, jnp.float32, longest=longest)
  assert int(recurrence.active_steps(inputs[1])) == longest
  reference = _loss_and_grads(cell, 'scan', *inputs)
  candidate = _loss_and_grads(cell, 'fused', *inputs)
  for want, got in zip(jax.tree.leaves(reference), jax.tree.leaves(candidate)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  d_projected = candidate[1][0]
  np.testing.assert_array_equal(d_projected[longest:], 0.0)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
@pytest.mark.parametrize('longest,chunk', [(9, 4), (6, 4), (0, 4), (9, 2), (5, 16)])
def test_fused_layer_projects_chunk_by_chunk_and_matches_the_reference(cell, longest, chunk):
  """recurrent_layer: 'fused' projects the input inside its loops (9 steps in chunks, the last one padded)."""
  projected, valid, kernel, bias = _recurrence_inputs(cell, jnp.float32, length=9, longest=longest)
  keys = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(keys[0], projected.shape[:2] + (6,))
  input_kernel = 0.4 * jax.random.normal(keys[1], (6, projected.shape[-1]))
  input_bias = 0.1 * jax.random.normal(keys[2], projected.shape[-1:])

  def loss_and_grads(implementation):
    def loss(*weights):
      outputs, state = recurrence.recurrent_layer(cell, weights[0], valid, *weights[1:], implementation=implementation,
                                                  chunk=chunk)
      return (outputs * jnp.linspace(-1.0, 1.0, outputs.size).reshape(outputs.shape)).sum() + sum(
          (s ** 2).sum() for s in state)
    return jax.jit(jax.value_and_grad(loss, argnums=range(5)))(x, input_kernel, input_bias, kernel, bias)

  reference, candidate = loss_and_grads('scan'), loss_and_grads('fused')
  for want, got in zip(jax.tree.leaves(reference), jax.tree.leaves(candidate)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(candidate[1][0][longest:], 0.0)


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


def _attention_inputs(dtype, batch=2, length=32, heads=2, head_dim=16, seed=1):
  keys = jax.random.split(jax.random.key(seed), 3)
  q, k, v = (jax.random.normal(key, (batch, length, heads, head_dim)).astype(dtype) for key in keys)
  valid = jnp.arange(length)[None, :] < jnp.array([length, length // 2 + 3])[:, None]
  return q, k, v, valid


MASKS = {'padding': {}, 'causal': dict(causal=True), 'directional': dict(directional=True)}


def _attention_loss_and_grads(implementation, q, k, v, valid, mask):
  """Loss over real query positions only (outputs at padded queries are unspecified)."""
  def loss(q, k, v):
    from zoo.kernels.attention import dot_product_attention  # pylint: disable=import-outside-toplevel
    out = dot_product_attention(q, k, v, valid, **MASKS[mask], implementation=implementation)
    weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
    return (out.astype(jnp.float32) * weights * valid[:, :, None, None]).sum()
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize('mask', sorted(MASKS))
@pytest.mark.parametrize('dtype, tolerance', [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_pallas_attention_matches_xla_reference(mask, dtype, tolerance):
  """'directional' also checks the reversal that gives a causal kernel its backward heads."""
  inputs = _attention_inputs(dtype)
  reference = _attention_loss_and_grads('xla', *[x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x
                                                 for x in inputs], mask)
  candidate = _attention_loss_and_grads('pallas', *inputs, mask)
  for want, got in zip(jax.tree.leaves(reference), jax.tree.leaves(candidate)):
    scale = float(jnp.abs(want).max()) + 1e-6
    np.testing.assert_allclose(np.asarray(got, np.float32) / scale, np.asarray(want) / scale, atol=tolerance)


def test_directional_heads_see_their_own_side_only():
  q, k, v, valid = _attention_inputs(jnp.float32, length=8, heads=4)
  from zoo.kernels.attention import dot_product_attention  # pylint: disable=import-outside-toplevel
  attend = lambda values: dot_product_attention(q, k, values, valid, directional=True, implementation='xla')
  changed = np.abs(attend(v.at[:, 5].add(1.0)) - attend(v)).max(-1) > 0  # [B, T, H]: reached by step 5's value
  steps = np.arange(8)[:, None]
  forward, backward = np.broadcast_to(steps >= 5, (8, 2)), np.broadcast_to(steps <= 5, (8, 2))
  np.testing.assert_array_equal(changed[0], np.concatenate([forward, backward], axis=1))
  # The second row's real keys end at step 6 (valid); the output at its padded query 7 is unspecified.
  np.testing.assert_array_equal(changed[1, :7], np.concatenate([forward, backward], axis=1)[:7])


def test_real_steps_reverse_in_place_of_their_padding():
  from zoo.kernels.attention import reverse_real_steps  # pylint: disable=import-outside-toplevel
  x = jnp.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
  reversed_x = reverse_real_steps(x, x != 0)
  np.testing.assert_array_equal(reversed_x, [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4]])
  np.testing.assert_array_equal(reverse_real_steps(reversed_x, x != 0), x)
  np.testing.assert_array_equal(reverse_real_steps(x, None), x[:, ::-1])


def test_directional_attention_needs_an_even_head_count_and_no_causal_mask():
  from zoo.kernels.attention import dot_product_attention  # pylint: disable=import-outside-toplevel
  q = jnp.zeros((1, 4, 3, 8))
  with pytest.raises(ValueError, match='even number of heads'):
    dot_product_attention(q, q, q, directional=True)
  q = jnp.zeros((1, 4, 2, 8))
  with pytest.raises(ValueError, match='causal=False'):
    dot_product_attention(q, q, q, causal=True, directional=True)


def test_xla_reference_agrees_with_jax_nn_attention():
  q, k, v, valid = _attention_inputs(jnp.float32)
  from zoo.kernels.attention import xla_attention  # pylint: disable=import-outside-toplevel
  mask = valid[:, None, None, :] & jnp.tril(jnp.ones((32, 32), bool))[None, None]
  want = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation='xla')
  np.testing.assert_allclose(xla_attention(q, k, v, valid, causal=True), want, rtol=1e-5, atol=1e-5)


def test_attention_dispatch_says_what_it_picks_and_why():
  from zoo.kernels import attention  # pylint: disable=import-outside-toplevel
  q32 = jnp.zeros((2, 64, 4, 64), jnp.float32)
  assert attention.choose(q32) == ('xla', 'no fused attention kernel for the cpu backend in zoo')
  assert attention.choose(q32.astype(jnp.bfloat16), backend='gpu')[0] == 'cudnn'
  chosen, reason = attention.choose(q32, backend='gpu')
  assert chosen == 'xla' and 'TF32' in reason
  assert attention.choose(jnp.zeros((2, 64, 4, 256), jnp.bfloat16), backend='gpu')[0] == 'xla'
  assert attention.pallas_unsupported(jnp.zeros((2, 60, 4, 64))).startswith('sequence length 60')
  assert attention.hopper_unsupported(jnp.zeros((2, 128, 4, 64), jnp.float16)) == 'not a Hopper GPU'
  with pytest.raises(ValueError, match='xla, cudnn, pallas, auto'):
    attention.dot_product_attention(q32, q32, q32, implementation='flash')


def test_auto_recurrence_is_fused_everywhere_and_pallas_needs_two_hidden_tiles(monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert recurrence.resolve('auto') == 'fused'
  assert recurrence.resolve('pallas') == 'pallas'
  assert pallas_recurrence.tile_size(64) == 32 and pallas_recurrence.tile_size(1024) == 64
  assert 'not a multiple of 16 of at least 32' in pallas_recurrence.unsupported_reason(16)
  with pytest.raises(ValueError, match='use implementation "fused"'):
    pallas_recurrence.recurrence('lstm', *[jnp.zeros(s) for s in ((3, 2, 64), (3, 2, 1), (16, 64), (64,))])
