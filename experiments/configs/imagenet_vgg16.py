"""ImageNet-1k, VGG-16 with BatchNorm (138 M params): torchvision's vgg16_bn recipe.

Batch 256, SGD momentum 0.9, learning rate 0.01 divided by 10 every 30 epochs, weight decay 5e-4 (L2),
90 epochs, dropout 0.5 in the dense layers, bf16 compute (torchvision's published top-1: 73.4%; not
trained here). Its first dense layer holds 103 M of the params: the model is a test of memory planning
(experiments/plan.py) more than a recipe to beat ResNet-50.
"""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('imagenet2012')
  config.data.name = 'imagenet2012'
  config.data.image_size = 224
  config.data.batch_size = 256
  config.model = ml_collections.ConfigDict(dict(name='vgg', num_classes=1000, dropout_rate=0.5, remat='none'))
  config.task = ml_collections.ConfigDict(dict(name='classification'))
  config.optimizer.update(dict(name='momentum', momentum=0.9, learning_rate=0.01, schedule='piecewise',
                               boundaries=(1 / 3, 2 / 3), scales=(0.1, 0.1), l2=5e-4, decay_mask='kernels'))
  config.compute_dtype = 'bfloat16'
  config.num_epochs = 90
  config.eval_every = 5000
  config.checkpoint.every = 5000
  return config
