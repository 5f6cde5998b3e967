"""The ``mlp-ln-tanh`` policy network (:mod:`common.policy`) as framework modules, one definition each:
:mod:`common.nets.torch_policy` (trainer's torch backend and the trader) and :mod:`common.nets.mlx_policy`
(trainer's MLX backend). Same layer names (``fc1 ln1 fc2 ln2 out``), so their ``actor.*``/``critic.*``
parameter names are the safetensors artefact's and a model trained on one loads in the other.

Import the submodule you need: this package imports neither torch nor MLX, so ``common`` never does.
"""
