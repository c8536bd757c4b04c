"""The CNN: shapes, logical axis names, and config errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from zoo import models
from zoo.models.layers import Dropout


def test_cnn_maps_images_to_logits_with_logically_named_params():
  model = models.build(ml_collections.ConfigDict(dict(name='cnn', num_classes=7, dropout_rate=0.5)))
  x = jnp.zeros((3, 28, 28, 1))
  variables = model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, x, train=False)
  logits = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)})
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  specs = nn.get_partition_spec(variables)['params']
  assert tuple(specs['Conv_0']['kernel']) == ('conv_height', 'conv_width', 'conv_in', 'conv_out')
  assert tuple(specs['Dense_0']['kernel']) == ('embed', 'mlp')
  assert tuple(specs['Dense_1']['kernel']) == ('mlp', 'classes')
  shapes = jax.tree.map(jnp.shape, nn.meta.unbox(variables['params']))
  assert shapes['Dense_0']['kernel'] == (7 * 7 * 64, 256)


def test_dropout_only_in_training():
  model = models.build(ml_collections.ConfigDict(dict(name='cnn', dropout_rate=0.5)))
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 28, 28, 1))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  eval_a, eval_b = (model.apply(variables, x, train=False) for _ in range(2))
  assert jnp.array_equal(eval_a, eval_b)
  train_a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
  assert not jnp.allclose(train_a, eval_a)


def test_unknown_model_or_option_names_the_fix():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet9000'.*config.model.name.*cnn"):
    models.build(ml_collections.ConfigDict(dict(name='resnet9000')))
  with pytest.raises(ValueError, match=r"no option widht.*options are: .*features"):
    models.build(ml_collections.ConfigDict(dict(name='cnn', widht=3)))


@pytest.mark.parametrize('rate, shape, dtype', [
    (0.3, (64, 60, 130), jnp.float32),   # last axis not a multiple of 4
    (0.5, (4096, 9), jnp.bfloat16),
    (0.1, (256, 512), jnp.float32),
    (0.001, (256, 512), jnp.float32),    # near 0: full-precision uniforms
])
def test_zoo_dropout_drops_its_rate_and_keeps_the_expectation(rate, shape, dtype):
  layer = Dropout(rate)
  x = jnp.ones(shape, dtype)
  out = layer.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(3)})
  assert out.shape == shape and out.dtype == dtype
  dropped = float(jnp.mean(out == 0))
  assert abs(dropped - rate) < 4 * (rate * (1 - rate) / x.size) ** 0.5 + 1 / 256
  assert abs(float(jnp.mean(out.astype(jnp.float32))) - 1.0) < 0.02
  again = layer.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(3)})
  other = layer.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(4)})
  assert jnp.array_equal(out, again) and not jnp.array_equal(out, other)
  assert jnp.array_equal(layer.apply({}, x, deterministic=True), x)
