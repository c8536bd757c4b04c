"""zoo: a JAX/Flax functional model zoo.

Rooms, lowest first (a room imports only rooms below it; docs/ and README.md describe each):
  `zoo.kernels`, `zoo.errors`   attention and LSTM/GRU kernels behind jnp references; error types
  `zoo.models`                  pure linen modules; `zoo.models.build(config.model)`
  `zoo.tasks`                   the Task protocol: classification, language_model, vae, distillation
  `zoo.data`                    TF-free TFDS builders, offline preparation, grain pipelines, your own TSV
  `zoo.parallel`                device meshes, logical-axis sharding rules, jit/pmap strategies, multi-host
  `zoo.compress`                magnitude pruning and int8 quantization transforms
  `zoo.train`                   state, optimizers, steps, the loop, checkpoints, run folders, evaluation
  `zoo.inspect`                 saliency, integrated gradients, attention maps
  `zoo.serving`, `zoo.pretrained`   jax.export artifacts of trained runs; published weights
  `zoo.cli`                     the `zoo-train` command
"""

from zoo import platforms as _platforms

_platforms.choose()
