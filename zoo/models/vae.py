"""Variational autoencoder (Kingma & Welling 2014) with MLP encoder and decoder."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.models.layers import dense


class Encoder(nn.Module):
  """x f32[B, ...] -> (mean, log variance), each f32[B, latent_dim]."""
  hidden: int
  latent_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = nn.relu(dense(self.hidden, ('embed', 'mlp'))(x.reshape((x.shape[0], -1))))
    return dense(self.latent_dim, ('mlp', 'latent'), name='mean')(x), \
        dense(self.latent_dim, ('mlp', 'latent'), name='logvar')(x)


class Decoder(nn.Module):
  """z f32[B, latent_dim] -> Bernoulli logits f32[B, output_dim]."""
  hidden: int
  output_dim: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    z = nn.relu(dense(self.hidden, ('latent', 'mlp'))(z))
    return dense(self.output_dim, ('mlp', 'embed'))(z)


class VAE(nn.Module):
  """Gaussian encoder q(z|x), standard-normal prior, Bernoulli decoder p(x|z).

  __call__ draws z with the 'latent' rng (reparameterised) and returns
  (logits f32[B, output_dim], mean, logvar f32[B, latent_dim]).
  """
  latent_dim: int = 20
  hidden: int = 500
  output_dim: int = 784

  def setup(self):
    self.encoder = Encoder(self.hidden, self.latent_dim)
    self.decoder = Decoder(self.hidden, self.output_dim)

  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x: f32[B, ...] with B*... = B*output_dim values in [0, 1]."""
    if x[0].size != self.output_dim:
      raise ValueError(f'VAE(output_dim={self.output_dim}) got inputs of shape {x.shape} '
                       f'({x[0].size} values each); set config.model.output_dim={x[0].size}.')
    mean, logvar = self.encoder(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng('latent'), mean.shape)
    return self.decoder(z), mean, logvar

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x -> (mean, logvar) of q(z|x)."""
    return self.encoder(x)

  def decode(self, z: jax.Array) -> jax.Array:
    """z f32[B, latent_dim] -> Bernoulli logits f32[B, output_dim]."""
    return self.decoder(z)

  def generate(self, z: jax.Array) -> jax.Array:
    """z f32[B, latent_dim] -> pixel probabilities f32[B, output_dim]."""
    return nn.sigmoid(self.decoder(z))
