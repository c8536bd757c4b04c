"""Task losses against hand-computed values, and the IW bound property."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from zoo import models, tasks


def _task(task_kwargs, model_kwargs):
  model = models.build(ml_collections.ConfigDict(model_kwargs))
  return tasks.build(ml_collections.ConfigDict(task_kwargs), model), model


def test_language_model_loss_is_next_token_cross_entropy():
  task, model = _task(dict(name='language_model'), dict(name='rnn_lm', vocab_size=7, embed_dim=4, hidden=8,
                                                          num_layers=1))
  batch = {'tokens': jax.random.randint(jax.random.PRNGKey(0), (2, 6), 0, 7)}
  params = model.init(jax.random.PRNGKey(1), batch['tokens'][:, :-1], train=False)['params']
  loss, (metrics, _) = task.loss(params, {}, batch, jax.random.PRNGKey(2), train=False)
  logits = model.apply({'params': params}, batch['tokens'][:, :-1], train=False)
  log_probs = jax.nn.log_softmax(logits)
  expected = -jnp.take_along_axis(log_probs, batch['tokens'][:, 1:, None], axis=-1).mean()
  assert float(loss) == pytest.approx(float(expected), rel=1e-6)
  sums = task.eval_sums(params, {}, {**batch, 'mask': jnp.array([1.0, 0.0])})
  assert float(sums['count']) == 5
  per_row = -jnp.take_along_axis(log_probs, batch['tokens'][:, 1:, None], axis=-1)[..., 0].sum(-1)
  assert float(sums['loss']) == pytest.approx(float(per_row[0]), rel=1e-5)


def test_vae_loss_is_reconstruction_plus_kl_and_iw_bound_is_tighter():
  task, model = _task(dict(name='vae', iw_samples=64), dict(name='vae', latent_dim=4, hidden=32))
  x = (jax.random.uniform(jax.random.PRNGKey(0), (8, 784)) > 0.7).astype(jnp.float32)
  params = model.init({'params': jax.random.PRNGKey(1), 'latent': jax.random.PRNGKey(2)}, x, train=False)['params']
  loss, (metrics, _) = task.loss(params, {}, {'image': x}, jax.random.PRNGKey(3), train=True)
  assert float(loss) == pytest.approx(float(metrics['reconstruction'] + metrics['kl']), rel=1e-6)
  _, mean, logvar = model.apply({'params': params}, x, train=True, rngs={'latent': jax.random.PRNGKey(3)})
  kl = 0.5 * (jnp.exp(logvar) + mean ** 2 - 1 - logvar).sum(-1).mean()
  assert float(metrics['kl']) == pytest.approx(float(kl), rel=1e-5)
  sums = task.eval_sums(params, {}, {'image': x})
  assert float(sums['count']) == 8
  # log p(x) >= IW bound >= ELBO, so the IW NLL is at most the negative ELBO (up to sampling noise).
  assert float(sums['iw_nll']) <= float(sums['loss']) + 1e-3 * abs(float(sums['loss']))
  assert np.isfinite(float(sums['iw_nll']))
