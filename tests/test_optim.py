"""The optimizer factory: every optimizer and schedule, penalties and masks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from zoo.train import optim


def _config(**kwargs):
  base = dict(name='sgd', learning_rate=0.1, schedule='constant')
  return ml_collections.ConfigDict({**base, **kwargs})


PARAMS = {'dense': {'kernel': jnp.array([[1.0, -2.0], [0.5, 3.0]]), 'bias': jnp.array([0.5, -0.5])}}


def _run(tx, steps=3):
  """Applies `steps` updates with a fixed, param-dependent gradient."""
  params, state = PARAMS, tx.init(PARAMS)
  for _ in range(steps):
    grads = jax.tree.map(lambda p: jnp.cos(p) + 0.1, params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize('config,reference', [
    (_config(name='sgd'), optax.sgd(0.1)),
    (_config(name='momentum', momentum=0.8), optax.sgd(0.1, momentum=0.8)),
    (_config(name='nesterov', momentum=0.8), optax.sgd(0.1, momentum=0.8, nesterov=True)),
    (_config(name='adam', learning_rate=1e-2), optax.adam(1e-2)),
    (_config(name='adamw', learning_rate=1e-2, weight_decay=0.1, decay_mask='all'),
     optax.adamw(1e-2, weight_decay=0.1)),
    (_config(name='rmsprop', learning_rate=1e-2, momentum=0.0), optax.rmsprop(1e-2, decay=0.9, eps=1e-8)),
    (_config(name='rmsprop', learning_rate=1e-2), optax.rmsprop(1e-2, decay=0.9, eps=1e-8, momentum=0.9)),
])
def test_each_optimizer_matches_optax(config, reference):
  tx, _ = optim.build(config, total_steps=10)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), _run(tx), _run(reference))


def test_adamw_decays_kernels_but_not_biases_by_default():
  tx, _ = optim.build(_config(name='adamw', learning_rate=1e-2, weight_decay=0.5), total_steps=10)
  reference = optax.adamw(1e-2, weight_decay=0.5, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), _run(tx), _run(reference))
  no_decay = _run(optax.adam(1e-2))
  np.testing.assert_allclose(_run(tx)['dense']['bias'], no_decay['dense']['bias'], rtol=1e-6)
  assert not np.allclose(_run(tx)['dense']['kernel'], no_decay['dense']['kernel'])


@pytest.mark.parametrize('config,expected', [
    (_config(schedule='constant'), {0: 0.1, 50: 0.1, 99: 0.1}),
    (_config(schedule='exponential', decay_steps=10, decay_rate=0.5, staircase=True),
     {0: 0.1, 9: 0.1, 10: 0.05, 25: 0.025}),
    (_config(schedule='piecewise', boundaries=(0.5, 0.75), scales=(0.1, 0.1)), {0: 0.1, 49: 0.1, 50: 0.01, 75: 0.001}),
    (_config(schedule='warmup_cosine', warmup_steps=10, end_learning_rate=0.0),
     {0: 0.0, 5: 0.05, 10: 0.1, 55: 0.05, 100: 0.0}),
])
def test_schedules_at_chosen_steps(config, expected):
  schedule = optim.build_schedule(config, total_steps=100)
  for step, value in expected.items():
    assert float(schedule(step)) == pytest.approx(value, rel=1e-5, abs=1e-7), step


def test_global_norm_clipping_bounds_the_step():
  tx, _ = optim.build(_config(name='sgd', learning_rate=1.0, grad_clip_norm=0.5), total_steps=1)
  grads = {'w': jnp.array([30.0, 40.0])}
  updates, _ = tx.update(grads, tx.init(grads), grads)
  np.testing.assert_allclose(updates['w'], [-0.3, -0.4], rtol=1e-6)


def test_l2_and_l1_penalties_respect_the_mask():
  params = {'kernel': jnp.array([[2.0, -4.0]]), 'bias': jnp.array([3.0])}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  for key, value, expected_kernel in (('l2', 0.5, [[-1.0, 2.0]]), ('l1', 0.5, [[-0.5, 0.5]])):
    tx, _ = optim.build(_config(name='sgd', learning_rate=1.0, **{key: value}), total_steps=1)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    np.testing.assert_allclose(updates['kernel'], expected_kernel, rtol=1e-6)
    np.testing.assert_allclose(updates['bias'], [0.0])
  tx, _ = optim.build(_config(name='sgd', learning_rate=1.0, l2=0.5, decay_mask='all'), total_steps=1)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  np.testing.assert_allclose(updates['bias'], [-1.5])


@pytest.mark.parametrize('key,value,match', [
    ('name', 'adagrad-ish', 'Unknown optimizer'),
    ('schedule', 'linear-ish', 'Unknown schedule'),
    ('decay_mask', 'weights', 'Unknown decay mask'),
    ('average_decay', 1.5, 'must lie in'),
    ('pruning', ml_collections.ConfigDict(dict(sparsity=0.5, scope='kernels', begin_fraction=0.1, end_fraction=0.5,
                                               every=1)), 'set one of them to 0'),
])
def test_bad_optimizer_settings_name_the_choices(key, value, match):
  config = _config(**{key: value})
  if key == 'pruning':
    config.average_decay = 0.99
  with pytest.raises(ValueError, match=match):
    optim.build(config, total_steps=10)


def test_params_average_tracks_the_params_and_leaves_the_updates_alone():
  decay = 0.5
  tx, _ = optim.build(_config(average_decay=decay), total_steps=10)
  plain, _ = optim.build(_config(), total_steps=10)
  params, state, want = PARAMS, tx.init(PARAMS), PARAMS
  assert optim.averaged_params(plain.init(PARAMS)) is None
  for n in range(4):
    grads = jax.tree.map(lambda p: jnp.cos(p) + 0.1, params)
    updates, state = tx.update(grads, state, params)
    reference, _ = plain.update(grads, plain.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, updates, reference)
    params = optax.apply_updates(params, updates)
    rate = min(decay, (1 + n) / (10 + n))  # 0.1, 0.18, 0.25, then the decay
    want = jax.tree.map(lambda a, p: rate * a + (1 - rate) * p, want, params)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), optim.averaged_params(state), want)
  assert not np.allclose(want['dense']['kernel'], params['dense']['kernel'])
  # As checkpoint.load_state restores it: NamedTuples as dicts, tuples as lists.
  restored = [{'count': np.int32(4), 'mu': PARAMS}, {'average': want, 'count': np.int32(4)}]
  assert optim.averaged_params(restored) is want and optim.averaged_params(restored[:1]) is None
  # Evaluation (and a distillation teacher) uses the average where there is one.
  assert optim.evaluation_params(params, restored) is want and optim.evaluation_params(params, restored[:1]) is params
