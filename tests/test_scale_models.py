"""The pod-scale models (ResNet-50, VGG-16, ViT-B/16, the encoder at BERT-base size) at tiny widths:
shapes, gradients, logical axes, learning on real images, scan over layers and rematerialisation."""

from __future__ import annotations

import gzip

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import RAW_DATA_DIR

from zoo import models
from zoo.models.flops import forward_flops
from zoo.models.layers import stack_layers, unstack_layers
from zoo.models.vit import sincos_2d_positions

TINY = {
    'bottleneck_resnet': dict(name='bottleneck_resnet', num_classes=10, stage_sizes=(1, 1), widths=(8, 16)),
    'vgg': dict(name='vgg', num_classes=10, stages=((8,), (16,)), dense_width=32, dropout_rate=0.0),
    'vit': dict(name='vit', num_classes=10, patch_size=8, d_model=32, num_layers=2, num_heads=4, d_ff=64),
}


def build(**kwargs) -> nn.Module:
  return models.build(ml_collections.ConfigDict(kwargs))


def init(model, x):
  variables = model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, x, train=False)
  return nn.meta.unbox(variables)


@pytest.fixture(scope='module')
def mnist8():
  """8 real MNIST train images (two of each of 4 digits would be luckier; these are the first 8) as
  f32[8, 32, 32, 3] in [0, 1] (padded to 32 px, grey tiled to 3 channels) and their labels i32[8]."""
  with gzip.open(RAW_DATA_DIR / 'mnist' / 'train-images-idx3-ubyte.gz') as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16, count=8 * 28 * 28).reshape(8, 28, 28)
  with gzip.open(RAW_DATA_DIR / 'mnist' / 'train-labels-idx1-ubyte.gz') as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8, count=8)
  images = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255.0
  return jnp.asarray(np.repeat(images[..., None], 3, axis=-1)), jnp.asarray(labels.astype(np.int32))


@pytest.mark.parametrize('name', sorted(TINY))
def test_forward_backward_shapes_and_logical_axes(name):
  model = build(**TINY[name])
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  boxed = model.init({'params': jax.random.PRNGKey(0)}, x, train=False)['params']
  names = jax.tree.leaves(boxed, is_leaf=lambda leaf: isinstance(leaf, nn.Partitioned))
  assert all(isinstance(leaf, nn.Partitioned) for leaf in names), 'every param carries logical axis names'
  variables = nn.meta.unbox(model.init({'params': jax.random.PRNGKey(0)}, x, train=False))
  params, state = variables.pop('params'), variables

  def loss(params):
    logits, _ = model.apply({'params': params, **state}, x, train=True, mutable=list(state),
                            rngs={'dropout': jax.random.PRNGKey(1)})
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    return (logits ** 2).mean() + logits[:, 0].sum()

  grads = jax.jit(jax.grad(loss))(params)
  assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, params)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('name, params, mult_adds', [
    ('bottleneck_resnet', 25_557_032, 4.09e9),  # torchvision's resnet50: 25,557,032 params, 4.1 G mult-adds
    ('vgg', 138_361_768, 15.47e9),  # vgg16_bn less its 13 conv biases (BatchNorm follows each conv)
    ('vit', 86_415_592, 17.47e9),  # ViT-B/16 with a GAP head (86.4 M; 17.6 G with the class token)
])
def test_full_size_params_and_analytic_flops(name, params, mult_adds):
  model = build(name=name)
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: nn.meta.unbox(model.init(jax.random.PRNGKey(0), x, train=False)['params']), x)
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == params
  assert forward_flops(model, x) / 2 == pytest.approx(mult_adds, rel=0.01)


@pytest.mark.parametrize('name', sorted(TINY))
def test_overfits_eight_real_images(name, mnist8):
  images, labels = mnist8
  model = build(**TINY[name])
  variables = init(model, images)
  params, state = variables.pop('params'), variables
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, state):
    def loss_fn(params):
      logits, new_state = model.apply({'params': params, **state}, images, train=True, mutable=list(state))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, state, loss

  opt_state, losses = tx.init(params), []
  for _ in range(40):
    params, opt_state, state, loss = step(params, opt_state, state)
    losses.append(float(loss))
  assert losses[-1] < 0.25 * losses[0], losses


SCAN_CASES = {
    'transformer': (dict(name='transformer', vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=3,
                         d_ff=64, dropout_rate=0.0),
                    jax.random.randint(jax.random.PRNGKey(0), (4, 16), 1, 50)),
    'vit': (dict(TINY['vit'], num_layers=3), jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))),
}


def _loss_and_grads(model, params, x):
  def loss(params):
    logits = model.apply({'params': params}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(x.shape[0]) % 2).mean()
  return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize('name', sorted(SCAN_CASES))
def test_scanned_equals_unscanned_and_layouts_convert(name):
  kwargs, x = SCAN_CASES[name]
  plain, scanned = build(**kwargs), build(**kwargs, scan_layers=True)
  params = init(plain, x)['params']
  params = jax.tree.map(lambda p: p + 0.01 * jnp.ones_like(p), params)  # a non-zero ViT head
  stacked = stack_layers(params, 'EncoderBlock_')
  assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, init(scanned, x)['params'])
  loss, grads = _loss_and_grads(plain, params, x)
  scanned_loss, scanned_grads = _loss_and_grads(scanned, stacked, x)
  assert abs(float(loss) - float(scanned_loss)) < 1e-6
  back = unstack_layers(scanned_grads, 'EncoderBlock_')
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), back, grads)
  jax.tree.map(np.testing.assert_array_equal, unstack_layers(stacked, 'EncoderBlock_'), params)


@pytest.mark.parametrize('remat', ['full', 'dots_saveable'])
def test_remat_keeps_values(remat):
  kwargs, x = SCAN_CASES['vit']
  params = jax.tree.map(lambda p: p + 0.01, init(build(**kwargs), x)['params'])
  loss, grads = _loss_and_grads(build(**kwargs), params, x)
  for scan in (False, True):
    model = build(**kwargs, remat=remat, scan_layers=scan)
    remat_loss, remat_grads = _loss_and_grads(model, stack_layers(params, 'EncoderBlock_') if scan else params, x)
    assert abs(float(loss) - float(remat_loss)) < 1e-6
    if scan:
      remat_grads = unstack_layers(remat_grads, 'EncoderBlock_')
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), remat_grads, grads)


def test_remat_policy_is_checked():
  with pytest.raises(ValueError, match='dots_saveable'):
    init(build(**TINY['vit'], remat='some'), jnp.ones((1, 32, 32, 3)))


def test_sincos_2d_positions_are_distinct_and_bounded():
  table = sincos_2d_positions(4, 4, 32)
  assert table.shape == (16, 32) and np.abs(table).max() <= 1.0
  assert len({row.tobytes() for row in table}) == 16
