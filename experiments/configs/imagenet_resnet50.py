"""ImageNet-1k, ResNet-50 (v1.5): the Flax ImageNet example's recipe (its target: 76.5% top-1 at 90 epochs).

Batch 1024, SGD with Nesterov momentum 0.9, learning rate 0.1 x batch/256 = 0.4, 5 epochs of linear warmup
then cosine decay to 0, L2 1e-4 on the kernels, bf16 compute with f32 params, BatchNorm momentum 0.9.
Nobody can check the 76.5% on a CPU machine: 90 epochs are ~112k steps of 1024 images (the Flax
example publishes its times on a TPU v3-32 and 8 V100s). What this repository checks is that
the step compiles and fits (experiments/plan.py; benchmarks/plan_tpu.jsonl) and that the model
learns at small scale (tests/test_scale_models.py).
"""

import ml_collections

from zoo.config import default_config

IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config() -> ml_collections.ConfigDict:
  config = default_config('imagenet2012')
  config.data.name = 'imagenet2012'
  config.data.image_size = 224
  config.data.batch_size = 1024
  config.model = ml_collections.ConfigDict(dict(name='bottleneck_resnet', num_classes=1000, remat='none'))
  config.task = ml_collections.ConfigDict(dict(name='classification'))
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.data.batch_size
  config.optimizer.update(dict(name='nesterov', momentum=0.9, learning_rate=0.1 * config.data.batch_size / 256,
                               schedule='warmup_cosine', warmup_steps=5 * steps_per_epoch, l2=1e-4,
                               decay_mask='kernels'))
  config.compute_dtype = 'bfloat16'
  config.num_epochs = 90
  config.log_every = 100
  config.eval_every = steps_per_epoch
  config.checkpoint.every = steps_per_epoch
  return config
