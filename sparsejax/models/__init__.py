"""Decoder families (GPT-2, Llama, OLMo-1, OLMo-2, Qwen2) as pure functions over parameter pytrees."""
from .config import FAMILIES, ModelConfig, config_from_hf, config_to_hf
from .decoder import LAYER_HOOKS, MODEL_HOOKS, forward, hook_names, init_params

__all__ = ["FAMILIES", "LAYER_HOOKS", "MODEL_HOOKS", "ModelConfig", "config_from_hf", "config_to_hf", "forward",
           "hook_names", "init_params"]
