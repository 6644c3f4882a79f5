"""GPU transformer and trainer: ``model.ModelConfig``, ``model.Transformer``, ``model.train``.

Imports only torch, numpy and pyarrow (and the standard library), which is all the GPU
machine has; ``model.rope`` also uses Triton, which PyTorch's CUDA builds ship, when present.
"""

from model.model import PRESETS, LMOutput, ModelConfig, Transformer, config_from_preset

__all__ = ["PRESETS", "LMOutput", "ModelConfig", "Transformer", "config_from_preset"]
