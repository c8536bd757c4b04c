"""int8 quantization: the int8 path equals a dequantized f32 reference, QAT gradients flow, clear errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.compress import quantization
from zoo.errors import ConfigError
from zoo.models import CNN, TransformerEncoder
from zoo.train.compression import quantize_and_evaluate


def _cnn_and_input():
  model = CNN(features=(8, 16), hidden=32)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 28, 28, 1)), jnp.float32)
  return model, nn.meta.unbox(model.init(jax.random.PRNGKey(0), x, train=False)), x


def test_weights_quantize_per_output_channel_within_half_a_step():
  kernel = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 8, 16)) * np.arange(1, 17), jnp.float32)
  q, scale = quantization.quantize_weight(kernel)
  assert q.dtype == jnp.int8 and scale.shape == (16,)
  assert np.abs(np.asarray(q)).max(axis=(0, 1, 2)).tolist() == [127] * 16  # each channel uses the full range
  assert np.all(np.abs(q * scale - kernel) <= scale / 2 + 1e-7)


def test_int8_path_equals_the_dequantized_f32_reference():
  dense = nn.Dense(5)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 7)), jnp.float32)
  variables = dense.init(jax.random.PRNGKey(0), x)
  with quantization.quantized('int8'):
    y = jax.jit(lambda v, x: dense.apply(v, x))(variables, x)
    lowered = jax.jit(lambda v, x: dense.apply(v, x)).lower(variables, x).as_text()
  assert 'i8' in lowered and 'i32' in lowered  # int8 operands, int32 accumulation
  x_scale = quantization.activation_scale(x)
  w_q, w_scale = quantization.quantize_weight(variables['params']['kernel'])
  reference = (quantization.quantize_activation(x, x_scale) * x_scale) @ (w_q * w_scale) + variables['params']['bias']
  np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)

  model, variables, x = _cnn_and_input()
  f32 = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  with quantization.quantized('int8') as quantizer:  # a new function: jit would reuse the f32 trace of the old one
    int8 = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert quantizer.quantized_paths == {'Conv_0', 'Conv_1', 'Dense_0', 'Dense_1'}
  assert 0 < np.abs(int8 - f32).max() < 0.05 * np.abs(f32).max()  # close to f32, but really quantized


def test_static_scales_come_from_calibration():
  model, variables, x = _cnn_and_input()
  with quantization.quantized('calibrate') as calibrator:
    model.apply(variables, x, train=False)
  assert set(calibrator.calibration) == {'Conv_0', 'Conv_1', 'Dense_0', 'Dense_1'}
  assert float(calibrator.calibration['Conv_0']) == pytest.approx(float(jnp.abs(x).max()))
  with quantization.quantized('int8', calibrator.calibration):
    static = model.apply(variables, x, train=False)
  with quantization.quantized('int8', {}):
    with pytest.raises(ConfigError, match='No calibrated activation scale for Conv_0'):
      model.apply(variables, x, train=False)
  np.testing.assert_allclose(static, model.apply(variables, x, train=False), atol=0.05 * float(jnp.abs(static).max()))


def test_fake_quantization_passes_gradients_straight_through():
  x = jnp.linspace(-1.0, 1.0, 11)
  assert np.array_equal(jax.grad(lambda v: quantization.fake_quantize(v, quantization.quantize_weight).sum())(x),
                        np.ones(11))
  model, variables, x = _cnn_and_input()
  loss = lambda params: jnp.square(model.apply({"params": params}, x, train=False)).mean()
  with quantization.quantized('fake'):
    grads = jax.jit(jax.grad(loss))(variables['params'])
  norms = {name: float(jnp.linalg.norm(g['kernel'])) for name, g in grads.items()}
  assert all(np.isfinite(n) and n > 0 for n in norms.values()), norms


def test_unsupported_layers_are_listed():
  model = TransformerEncoder(vocab_size=20, max_len=8, d_model=16, num_heads=2, num_layers=1, d_ff=32,
                             head='classify', num_classes=2)
  tokens = jnp.ones((2, 8), jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), tokens, train=False)
  with quantization.quantized('int8') as quantizer:
    jax.jit(lambda v: model.apply(v, tokens, train=False))(variables)
  with pytest.raises(ConfigError, match='supports nn.Dense and nn.Conv only.*Embed_0/embedding.*query/kernel'):
    quantization.check_supported(variables['params'], quantizer.quantized_paths)


def test_int8_post_training_quantization_keeps_a_trained_cnns_accuracy(trained_run):
  rows = quantize_and_evaluate(str(trained_run), calibration_batches=2)
  f32, dynamic, static = (row['test_accuracy'] for row in rows)
  assert rows[1]['bytes'] < rows[0]['bytes'] / 3.9  # int8 kernels + per-channel scales
  assert abs(dynamic - f32) < 0.01 and abs(static - f32) < 0.01, rows
