"""zoo: a JAX/Flax functional model zoo.

Rooms: `zoo.models` (pure linen modules), `zoo.tasks` (losses and metrics),
`zoo.data` (TFDS + grain input pipelines), `zoo.train` (state, optimizers,
step, loop, checkpoints), `zoo.parallel` (meshes and shardings),
`zoo.kernels` (fused kernels behind reference implementations).
"""

from zoo import platforms as _platforms

_platforms.choose()
