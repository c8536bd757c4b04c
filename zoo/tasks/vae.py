"""Variational autoencoding: negative ELBO and an importance-weighted NLL, in nats."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from zoo.tasks.base import Batch, Params

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per example: f32[B, Z] -> f32[B]."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean ** 2 - 1.0 - logvar, axis=-1)


def as_f32(arrays):
  """The model's outputs in f32, so losses are f32 also when the model computes in bf16."""
  return tuple(a.astype(jnp.float32) for a in arrays)


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
  """-log p(x | logits) per example, summed over pixels: f32[B, P] -> f32[B]."""
  return optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)


def gaussian_log_density(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, exp(logvar)) summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + logvar + (z - mean) ** 2 / jnp.exp(logvar), axis=-1)


@dataclasses.dataclass(frozen=True)
class VariationalAutoencoder:
  """Trains a zoo VAE on the negative ELBO: Bernoulli reconstruction NLL + KL to the prior.

  eval_sums also reports an importance-weighted estimate of -log p(x) with
  `iw_samples` samples (Burda et al. 2016) when iw_samples > 0.
  """
  model: nn.Module
  input_key: str = 'image'
  iw_samples: int = 0

  def loss(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jnp.ndarray, tuple[dict, dict]]:
    """Mean negative ELBO f32[] (nats per example) and its parts."""
    x = batch[self.input_key].reshape((batch[self.input_key].shape[0], -1))
    outputs = self.model.apply({'params': params, **model_state}, x, train=train, rngs={'latent': rng, 'dropout': rng})
    logits, mean, logvar = as_f32(outputs)
    x = x.astype(jnp.float32)
    reconstruction, kl = bernoulli_nll(logits, x).mean(), gaussian_kl(mean, logvar).mean()
    loss = reconstruction + kl
    return loss, ({'loss': loss, 'reconstruction': reconstruction, 'kl': kl}, model_state)

  def _iw_nll(self, params, x, rng) -> jax.Array:
    """-log p(x) estimated with iw_samples importance samples from q(z|x): f32[B]."""
    variables = {'params': params}
    mean, logvar = self.model.apply(variables, x, method='encode')
    def log_weight(key):
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
      logits = self.model.apply(variables, z, method='decode')
      prior = gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
      return -bernoulli_nll(logits, x) + prior - gaussian_log_density(z, mean, logvar)
    log_weights = jax.lax.map(log_weight, jax.random.split(rng, self.iw_samples))  # [K, B]
    return -(jax.nn.logsumexp(log_weights, axis=0) - math.log(self.iw_samples))

  def eval_sums(self, params: Params, model_state: dict, batch: Batch) -> dict[str, jnp.ndarray]:
    """Sums over real examples: {'loss' (neg. ELBO), 'reconstruction', 'kl', ['iw_nll'], 'count'}."""
    x = batch[self.input_key].reshape((batch[self.input_key].shape[0], -1))
    mask = batch.get('mask', jnp.ones(x.shape[:1], jnp.float32))
    rng = jax.random.PRNGKey(0)
    logits, mean, logvar = as_f32(self.model.apply({'params': params, **model_state}, x, train=False,
                                                   rngs={'latent': rng}))
    x = x.astype(jnp.float32)
    reconstruction, kl = bernoulli_nll(logits, x), gaussian_kl(mean, logvar)
    sums = {'loss': ((reconstruction + kl) * mask).sum(), 'reconstruction': (reconstruction * mask).sum(),
            'kl': (kl * mask).sum(), 'count': mask.sum()}
    if self.iw_samples:
      sums['iw_nll'] = (self._iw_nll(params, x, jax.random.fold_in(rng, 1)) * mask).sum()
    return sums
