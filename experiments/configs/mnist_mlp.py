"""MNIST, MLP 784-512-256-10 with dropout (target >= 98.3% test accuracy)."""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = ml_collections.ConfigDict(dict(
      name='mlp', num_classes=10, widths=(512, 256), activation='relu', dropout_rate=0.2, batch_norm=False))
  config.optimizer.update(dict(name='adamw', learning_rate=1e-3, weight_decay=1e-4, schedule='warmup_cosine',
                               warmup_steps=200))
  config.num_epochs = 20
  config.eval_every = 469
  config.checkpoint.every = 469
  return config
