"""MNIST, the Flax-examples CNN: >= 99.2% test accuracy in 10 epochs on 2 CPU cores."""

import ml_collections

from zoo.config import YNN_FUSIONS, default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = ml_collections.ConfigDict(dict(
      name='cnn', num_classes=10, features=(32, 64), hidden=256, dropout_rate=0.0))
  config.task = ml_collections.ConfigDict(dict(name='classification', label_smoothing=0.0))
  config.optimizer.update(dict(name='momentum', learning_rate=0.1, momentum=0.9, schedule='warmup_cosine',
                               warmup_steps=200))
  config.num_epochs = 10
  config.eval_every = 469
  config.checkpoint.every = 469
  # XLA CPU: YNNPACK for dot/elementwise/reduce fusions makes the conv step ~2x faster (benchmarks/README.md).
  config.cpu_compiler_options = {'xla_cpu_experimental_ynn_fusion_type': YNN_FUSIONS}
  return config
