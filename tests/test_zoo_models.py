"""Every zoo model: shapes, dtypes, parameter counts, purity, gradients, and the
properties each family promises (padding, positions, causality, BatchNorm)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from zoo import models
from zoo.models.transformer import sinusoidal_positions

RNG = jax.random.PRNGKey(0)
RNGS = {'params': RNG, 'dropout': jax.random.PRNGKey(1), 'latent': jax.random.PRNGKey(2)}


def build(**kwargs) -> nn.Module:
  return models.build(ml_collections.ConfigDict(kwargs))


def tokens(batch=3, length=12, vocab=50, seed=0, pad_from=None):
  x = np.array(jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 1, vocab))
  if pad_from is not None:
    for row, start in enumerate(pad_from):
      x[row, start:] = 0
  return jnp.asarray(x)


def count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


# name -> (model kwargs, input, output shape, parameter count or None)
CASES = {
    'mlp': (dict(name='mlp', widths=(512, 256)), jnp.ones((4, 28, 28, 1)), (4, 10),
            784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10),
    'mlp_bn': (dict(name='mlp', widths=(64,), batch_norm=True, activation='gelu'), jax.random.normal(RNG, (4, 8)),
               (4, 10), 8 * 64 + 2 * 64 + 64 * 10 + 10),
    'cnn': (dict(name='cnn'), jnp.ones((2, 28, 28, 1)), (2, 10),
            9 * 32 + 32 + 9 * 32 * 64 + 64 + 3136 * 256 + 256 + 2570),
    'resnet_28': (dict(name='resnet', stage_sizes=(1, 1), widths=(8, 16)), jnp.ones((2, 28, 28, 1)), (2, 10), None),
    'resnet_32': (dict(name='resnet', stage_sizes=(2, 2, 2), widths=(16, 32, 64)), jnp.ones((2, 32, 32, 3)), (2, 10),
                  None),
    'lstm_classifier': (dict(name='rnn_classifier', vocab_size=50, embed_dim=16, hidden=32), tokens(), (3, 2),
                        50 * 16 + 16 * 128 + 128 + 32 * 128 + 128 + 32 * 2 + 2),
    'bigru_classifier': (dict(name='rnn_classifier', vocab_size=50, embed_dim=16, hidden=32, cell='gru',
                              bidirectional=True, num_layers=2), tokens(), (3, 2), None),
    'lstm_lm': (dict(name='rnn_lm', vocab_size=50, embed_dim=16, hidden=32, num_layers=2), tokens(), (3, 12, 50),
                None),
    'transformer_classifier': (dict(name='transformer', vocab_size=50, max_len=16, d_model=32, num_heads=4,
                                    num_layers=2, d_ff=64), tokens(), (3, 2), None),
    'transformer_lm': (dict(name='transformer', vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=1,
                            d_ff=64, causal=True, head='lm'), tokens(), (3, 12, 50), None),
    'vae': (dict(name='vae', latent_dim=20, hidden=500), jnp.ones((4, 28, 28, 1)), (4, 784),
            784 * 500 + 500 + 2 * (500 * 20 + 20) + 20 * 500 + 500 + 500 * 784 + 784),
}


def _output(out):
  return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize('case', sorted(CASES))
def test_shapes_params_purity_and_gradients(case):
  kwargs, x, shape, num_params = CASES[case]
  model = build(**kwargs)
  variables = model.init(RNGS, x, train=False)
  params = nn.meta.unbox(variables['params'])
  state = {k: v for k, v in variables.items() if k != 'params'}
  out = _output(model.apply({'params': params, **state}, x, train=False, rngs=RNGS))
  assert out.shape == shape and out.dtype == jnp.float32
  if num_params is not None:
    assert count(params) == num_params
  again = _output(model.apply({'params': params, **state}, x, train=False, rngs=RNGS))
  np.testing.assert_array_equal(out, again)

  def loss(p):
    result = model.apply({'params': p, **state}, x, train=True, rngs=RNGS, mutable=list(state))
    return jnp.mean(_output(result[0]) ** 2)

  grads = jax.grad(loss)(params)
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.isfinite(g).all()) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) > 0 for g in leaves) >= len(leaves) // 2


@pytest.mark.parametrize('kwargs', [
    dict(name='rnn_classifier', vocab_size=50, embed_dim=16, hidden=32),
    dict(name='rnn_classifier', vocab_size=50, embed_dim=16, hidden=32, cell='gru', bidirectional=True, num_layers=2),
    dict(name='rnn_classifier', vocab_size=50, embed_dim=16, hidden=32, bidirectional=True, pooling='max'),
    dict(name='rnn_classifier', vocab_size=50, embed_dim=16, hidden=32, bidirectional=True, pooling='attention'),
    dict(name='transformer', vocab_size=50, max_len=32, d_model=32, num_heads=4, num_layers=2, d_ff=64),
    dict(name='transformer', vocab_size=50, max_len=32, d_model=32, num_heads=4, num_layers=1, d_ff=64,
         pooling='max'),
    dict(name='transformer', vocab_size=50, max_len=32, d_model=32, num_heads=4, num_layers=1, d_ff=64,
         pooling='attention'),
    dict(name='transformer', vocab_size=50, max_len=32, d_model=32, num_heads=4, num_layers=2, d_ff=64,
         pooling='max', directional=True),
], ids=['lstm', 'bigru', 'bilstm_max_pool', 'bilstm_attention_pool', 'transformer', 'transformer_max_pool',
        'transformer_attention_pool', 'transformer_directional'])
def test_padding_does_not_change_a_sequence_result(kwargs):
  model = build(**kwargs)
  short = tokens(batch=2, length=10, pad_from=[7, 10])
  padded = jnp.concatenate([short, jnp.zeros((2, 14), short.dtype)], axis=1)
  variables = model.init(RNGS, padded, train=False)
  np.testing.assert_allclose(model.apply(variables, short, train=False),
                             model.apply(variables, padded, train=False), atol=1e-5)
  trimmed = short[:1, :7]
  np.testing.assert_allclose(model.apply(variables, trimmed, train=False),
                             model.apply(variables, short[:1], train=False), atol=1e-5)


def test_sinusoidal_table_matches_the_formula():
  table = sinusoidal_positions(50, 16)
  for position in (0, 1, 17, 49):
    for i in range(8):
      angle = position / 10000 ** (2 * i / 16)
      assert table[position, 2 * i] == pytest.approx(np.sin(angle), abs=1e-6)
      assert table[position, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-6)


def test_transformer_with_bf16_params_multiplies_in_bf16():
  """Mixed precision casts the params to bf16; no f32 constant may silently promote the activations back."""
  model = build(name='transformer', vocab_size=50, max_len=16, d_model=32, num_heads=2, num_layers=1, d_ff=64,
                num_classes=2)
  x = tokens(length=16)
  variables = jax.tree.map(lambda p: p.astype(jnp.bfloat16), model.init(RNGS, x, train=False))
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables)
  dots = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == 'dot_general']
  assert dots and all(var.aval.dtype == jnp.bfloat16 for eqn in dots for var in eqn.invars), dots


def test_transformer_configured_for_cudnn_initializes_in_f32_off_gpu():
  """Init traces 'xla' attention: a 'cudnn' model (half precision on GPU only) still gets its f32 params here."""
  kwargs = dict(name='transformer', vocab_size=50, max_len=16, d_model=32, num_heads=2, num_layers=1, d_ff=64,
                num_classes=2)
  x = tokens(length=16)
  params = build(**kwargs, attention='cudnn').init(RNGS, x, train=False)
  reference = build(**kwargs, attention='xla').init(RNGS, x, train=False)
  jax.tree.map(np.testing.assert_array_equal, params, reference)
  with pytest.raises(RuntimeError, match='cuDNN'):  # applying it still goes to the kernel asked for
    build(**kwargs, attention='cudnn').apply(params, x, train=False)


def test_causal_mask_blocks_the_future():
  model = build(name='transformer', vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2, d_ff=64,
                causal=True, head='lm')
  x = tokens(batch=1, length=12)
  variables = model.init(RNGS, x, train=False)
  changed = x.at[0, 8].set((x[0, 8] % 49) + 1)
  before, after = model.apply(variables, x, train=False), model.apply(variables, changed, train=False)
  np.testing.assert_allclose(before[0, :8], after[0, :8], atol=1e-6)
  assert not np.allclose(before[0, 8:], after[0, 8:])


@pytest.mark.parametrize('kwargs,x', [
    (dict(name='resnet', stage_sizes=(1,), widths=(8,)), jax.random.normal(RNG, (4, 28, 28, 1))),
    (dict(name='mlp', widths=(16,), batch_norm=True), jax.random.normal(RNG, (4, 8))),
], ids=['resnet', 'mlp'])
def test_batch_norm_statistics_update_in_training_only(kwargs, x):
  model = build(**kwargs)
  variables = model.init(RNGS, x, train=False)
  _, updated = model.apply(variables, x, train=True, mutable=['batch_stats'])
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables['batch_stats'], updated['batch_stats'])
  assert all(jax.tree.leaves(changed))
  _, unchanged = model.apply(variables, x, train=False, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'], unchanged['batch_stats'])


def test_vae_generates_probabilities_and_samples_differ_per_rng():
  model = build(name='vae', latent_dim=4, hidden=32)
  x = jnp.ones((2, 784)) * 0.5
  variables = model.init(RNGS, x, train=False)
  images = model.apply(variables, jnp.zeros((3, 4)), method=model.generate)
  assert images.shape == (3, 784) and float(images.min()) >= 0 and float(images.max()) <= 1
  first = model.apply(variables, x, train=True, rngs={'latent': jax.random.PRNGKey(5)})[0]
  second = model.apply(variables, x, train=True, rngs={'latent': jax.random.PRNGKey(6)})[0]
  assert not np.allclose(first, second)


@pytest.mark.parametrize('kwargs,x,words', [
    (dict(name='transformer', vocab_size=50, max_len=8, d_model=16, num_heads=2, num_layers=1, d_ff=32),
     tokens(length=12), 'exceeds the positional table (max_len=8)'),
    (dict(name='resnet'), jnp.ones((2, 28, 28)), 'Add the missing axes'),
    (dict(name='vae'), jnp.ones((2, 32, 32, 3)), 'set config.model.output_dim=3072'),
    (dict(name='rnn_classifier', vocab_size=50), jnp.ones((2, 3, 4), jnp.int32), 'tokens i32[batch, length]'),
    (dict(name='mlp', activation='swish-ish'), jnp.ones((2, 4)), "Unknown activation 'swish-ish'"),
    (dict(name='rnn_classifier', vocab_size=50, pooling='sum'), tokens(length=5),
     "use 'last', 'mean', 'max', 'attention'"),
], ids=['too_long', 'resnet_rank', 'vae_size', 'rnn_rank', 'activation', 'rnn_pooling'])
def test_wrong_inputs_get_clear_errors(kwargs, x, words):
  with pytest.raises(ValueError, match=None) as error:
    build(**kwargs).init(RNGS, x, train=False)
  assert words in str(error.value)


def test_attention_pooling_weights_only_real_steps():
  """Pool('attention'): a convex combination of the real steps (a constant sequence pools to itself)."""
  from zoo.models.layers import Pool  # pylint: disable=import-outside-toplevel
  x = jnp.concatenate([jnp.tile(jnp.arange(4.0), (2, 3, 1)), jnp.full((2, 2, 4), 100.0)], axis=1)  # [2, 5, 4]
  real = jnp.array([[True] * 3 + [False] * 2, [False] * 5])
  pool = Pool('attention', hidden=8)
  variables = nn.unbox(pool.init(jax.random.PRNGKey(0), x, real))
  assert jax.tree.map(jnp.shape, variables['params']) == {'keys': {'kernel': (4, 8)}, 'energy': {'kernel': (8, 1)}}
  pooled = pool.apply(variables, x, real)
  np.testing.assert_allclose(pooled[0], jnp.arange(4.0), rtol=1e-6)
  np.testing.assert_array_equal(pooled[1], 0.0)
