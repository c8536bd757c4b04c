"""Task losses against hand-computed values, the IW bound property, adversarial and consistency training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from zoo import models, tasks
from zoo.errors import ConfigError
from zoo.tasks import classification as classification_task


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


SEQUENCE_CLASSIFIERS = [
    dict(name='rnn_classifier', vocab_size=11, embed_dim=8, hidden=16),
    dict(name='transformer', vocab_size=11, max_len=8, d_model=16, num_heads=2, num_layers=1, d_ff=32,
         dropout_rate=0.0),
]


@pytest.mark.parametrize('model_kwargs', SEQUENCE_CLASSIFIERS, ids=lambda kwargs: kwargs['name'])
def test_adversarial_training_adds_the_loss_at_the_worst_nearby_embeddings(model_kwargs):
  classification = dict(name='classification', input_key='tokens')
  task, model = _task(dict(classification, adversarial_epsilon=0.5), model_kwargs)
  plain_task, _ = _task(classification, model_kwargs)
  batch = {'tokens': jnp.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]]), 'label': jnp.array([0, 1])}
  variables = model.init(jax.random.PRNGKey(1), batch['tokens'], train=False)
  assert set(variables) == {'params'}  # init leaves no batch-shaped perturbation zeros behind
  params, rng = variables['params'], jax.random.PRNGKey(2)
  objective, (metrics, _) = task.loss(params, {}, batch, rng, train=True)
  plain_loss, _ = plain_task.loss(params, {}, batch, rng, train=True)
  assert float(metrics['loss']) == float(plain_loss)
  assert float(objective) == pytest.approx(float(metrics['loss'] + metrics['adversarial_loss']), rel=1e-6)
  # The gradient direction raises the loss more than a random direction of the same size.
  zeros = task.zero_perturbations(params, {}, batch, rng)
  noise = jax.tree.map(lambda z: jax.random.normal(jax.random.PRNGKey(3), z.shape), zeros)
  random_logits, _ = task.logits(params, {}, batch, rng, train=True,
                                 perturbations=classification_task.scaled_per_example(noise, 0.5))
  random_loss = optax.softmax_cross_entropy_with_integer_labels(random_logits, batch['label']).mean()
  assert float(metrics['adversarial_loss']) > float(random_loss) and float(random_loss) != float(plain_loss)
  # The params gradient is that of CE(x) + CE(x + r) with r held fixed, as a plain three-pass reference computes it.
  direction = jax.grad(lambda z: task.cross_entropy(params, {}, batch, rng, z)[0])(zeros)
  r = classification_task.scaled_per_example(direction, 0.5)
  reference = jax.grad(lambda p: (task.cross_entropy(p, {}, batch, rng, None)[0]
                                  + task.cross_entropy(p, {}, batch, rng, r)[0]))(params)
  gradient = jax.grad(lambda p: task.loss(p, {}, batch, rng, train=True)[0])(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), gradient, reference)
  # Evaluation does not perturb.
  sums, plain_sums = task.eval_sums(params, {}, batch), plain_task.eval_sums(params, {}, batch)
  assert float(sums['loss']) == float(plain_sums['loss'])


def test_perturbations_are_scaled_to_the_norm_per_example_over_all_leaves():
  tree = {'a': jnp.arange(12.0).reshape(2, 3, 2), 'b': jnp.ones((2, 4))}
  scaled = classification_task.scaled_per_example(tree, 0.5)
  norms = jnp.sqrt(sum(jnp.square(leaf).reshape(2, -1).sum(-1) for leaf in jax.tree.leaves(scaled)))
  np.testing.assert_allclose(norms, [0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(scaled['b'][0] / scaled['b'][1], tree['b'][0] / tree['b'][1] * (
      jnp.sqrt(jnp.square(tree['a'][1]).sum() + 4) / jnp.sqrt(jnp.square(tree['a'][0]).sum() + 4)), rtol=1e-6)


def test_adversarial_training_with_a_bad_epsilon_or_model_names_the_option():
  with pytest.raises(ConfigError, match='adversarial_epsilon=-0.5 must be >= 0'):
    _task(dict(name='classification', adversarial_epsilon=-0.5), dict(name='mlp', widths=[8]))
  task, model = _task(dict(name='classification', adversarial_epsilon=0.5), dict(name='mlp', widths=[8]))
  batch = {'image': jnp.ones((2, 28, 28)), 'label': jnp.array([0, 1])}
  params = model.init(jax.random.PRNGKey(1), batch['image'], train=False)['params']
  with pytest.raises(ConfigError, match='adversarial_epsilon'):
    task.loss(params, {}, batch, jax.random.PRNGKey(2), train=True)


@pytest.mark.parametrize('option', ['adversarial_epsilon', 'consistency_weight'])
def test_distillation_refuses_the_other_training_objectives(option):
  with pytest.raises(ConfigError, match=option):
    tasks.Distillation(models.build(ml_collections.ConfigDict(SEQUENCE_CLASSIFIERS[0])), input_key='tokens',
                       teacher_workdir='runs/teacher', **{option: 0.5})


def test_consistency_training_adds_the_symmetric_kl_between_two_dropout_passes():
  classification = dict(name='classification', input_key='tokens')
  model_kwargs = dict(SEQUENCE_CLASSIFIERS[1], dropout_rate=0.3)
  task, model = _task(dict(classification, consistency_weight=2.0), model_kwargs)
  batch = {'tokens': jnp.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]]), 'label': jnp.array([0, 1])}
  params, rng = model.init(jax.random.PRNGKey(1), batch['tokens'], train=False)['params'], jax.random.PRNGKey(2)
  objective, (metrics, _) = task.loss(params, {}, batch, rng, train=True)
  # The reference: the batch stacked on itself in one train pass, so each copy draws its own dropout masks.
  twice = {key: jnp.concatenate([value, value]) for key, value in batch.items()}
  logits, _ = task.logits(params, {}, twice, rng, train=True)
  first, second = np.split(np.asarray(jax.nn.log_softmax(logits), np.float64), 2)
  assert not np.allclose(first, second)
  kl = lambda p, q: (np.exp(p) * (p - q)).sum(-1)
  expected_consistency = 0.5 * (kl(first, second) + kl(second, first)).mean()
  expected_loss = -np.concatenate([first, second])[np.arange(4), np.tile(batch['label'], 2)].mean()
  np.testing.assert_allclose(float(metrics['consistency']), expected_consistency, rtol=1e-4)
  np.testing.assert_allclose(float(metrics['loss']), expected_loss, rtol=1e-5)
  np.testing.assert_allclose(float(objective), expected_loss + 2.0 * expected_consistency, rtol=1e-5)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(
      jax.grad(lambda p: task.loss(p, {}, batch, rng, train=True)[0])(params)))
  # Without dropout both copies agree: the objective is the plain cross-entropy.
  deterministic, _ = _task(dict(classification, consistency_weight=2.0), SEQUENCE_CLASSIFIERS[1])
  plain, _ = _task(classification, SEQUENCE_CLASSIFIERS[1])
  objective, (metrics, _) = deterministic.loss(params, {}, batch, rng, train=True)
  assert float(metrics['consistency']) == pytest.approx(0.0, abs=1e-6)
  assert float(objective) == pytest.approx(float(plain.loss(params, {}, batch, rng, train=True)[0]), rel=1e-6)
  # Evaluation runs the batch once.
  assert float(task.eval_sums(params, {}, batch)['count']) == 2.0


def test_consistency_training_with_a_bad_weight_names_the_option():
  with pytest.raises(ConfigError, match='consistency_weight=-1.0 must be >= 0'):
    _task(dict(name='classification', consistency_weight=-1.0), dict(name='mlp', widths=[8]))
  with pytest.raises(ConfigError, match='do not combine'):
    _task(dict(name='classification', consistency_weight=1.0, adversarial_epsilon=0.5), dict(name='mlp', widths=[8]))


@pytest.mark.parametrize('name', sorted(tasks.TASKS))
def test_every_task_keeps_the_task_contract(name):
  model = models.build(ml_collections.ConfigDict(dict(name='mlp', widths=[8])))
  inputs = {'teacher': (model, {})} if name == 'distillation' else {}
  task = tasks.build(ml_collections.ConfigDict(dict(name=name)), model, **inputs)
  assert isinstance(task, tasks.Task)
  assert task.model is model and isinstance(task.input_key, str)


def test_distillation_without_a_teacher_says_how_to_give_one():
  model = models.build(ml_collections.ConfigDict(dict(name='mlp', widths=[8])))
  with pytest.raises(ConfigError, match='teacher_workdir'):
    tasks.build(ml_collections.ConfigDict(dict(name='distillation')), model)
