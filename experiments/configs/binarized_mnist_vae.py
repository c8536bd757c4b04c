"""Binarized MNIST, VAE 784-500-20 (MLP encoder and decoder, Bernoulli likelihood), Adam, 60 epochs.

Expected: 99.0 nats negative ELBO on test (target <= 100) in 4.1 min on 2 cores of an Intel Xeon
(2026-11-26, commit 279e775); importance-weighted NLL with k=500 samples: 94.16 nats
(experiments/evaluate.py --set=task.iw_samples=500). Model card: docs/models/vae.md.

  python experiments/train.py --config=experiments/configs/binarized_mnist_vae.py --workdir=runs/vae
"""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('binarized_mnist')
  config.model = ml_collections.ConfigDict(dict(name='vae', latent_dim=20, hidden=500, output_dim=784))
  config.task = ml_collections.ConfigDict(dict(name='vae', iw_samples=0))
  config.optimizer.update(dict(name='adam', learning_rate=1e-3, schedule='warmup_cosine', warmup_steps=500))
  config.num_epochs = 60
  config.eval_every_epochs = config.checkpoint.every_epochs = 10
  config.checkpoint.best_metric = 'eval_loss'
  config.checkpoint.best_mode = 'min'
  return config
