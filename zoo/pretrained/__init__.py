"""Published weights: `list()` names them, `load(name)` returns (model, variables, info).

  model, variables, info = zoo.pretrained.load('mnist_cnn')
  logits = model.apply(variables, info.preprocess('digit.png'), train=False)

The weights ship with zoo as safetensors files plus one manifest (zoo/pretrained/weights); each file's
sha256 is checked on every load. `load` also takes a folder or an http(s) URL of the same layout;
`to_nnx(model, variables)` hands the model to Flax NNX code.
"""

from __future__ import annotations

from zoo.pretrained.evaluation import evaluate
from zoo.pretrained.hub import Info, cache_dir, load, names
from zoo.pretrained.nnx_bridge import to_nnx
from zoo.train.weights import WeightsError

list = names  # noqa: A001  (zoo.pretrained.list(), as torch.hub.list)

__all__ = ['Info', 'WeightsError', 'cache_dir', 'evaluate', 'list', 'load', 'names', 'to_nnx']
