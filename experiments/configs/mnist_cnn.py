"""MNIST, the Flax-examples CNN: >= 99.2% test accuracy in 10 epochs on 2 CPU cores."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name='mnist', train_split='train', eval_split='test', test_split='test',
      batch_size=128, eval_batch_size=1000, cache_in_memory=True, num_threads=0,
      tfds_dir=ml_collections.config_dict.placeholder(str)))
  config.model = ml_collections.ConfigDict(dict(
      name='cnn', num_classes=10, features=(32, 64), hidden=256, dropout_rate=0.0))
  config.task = ml_collections.ConfigDict(dict(name='classification', label_smoothing=0.0))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='momentum', learning_rate=0.1, momentum=0.9, schedule='warmup_cosine', warmup_steps=200,
      end_learning_rate=0.0, weight_decay=0.0, l2=0.0, l1=0.0, grad_clip_norm=0.0, decay_mask='kernels'))
  config.mesh = ml_collections.ConfigDict(dict(axes={'data': -1}, rules=()))

  config.num_epochs = 10
  config.num_train_steps = -1
  config.log_every = 100
  config.eval_every = 469
  config.checkpoint = ml_collections.ConfigDict(dict(every=469, keep=3, async_save=True))
  return config
