"""Models: a registry of architectures built from the typed [model] config."""
from .registry import create_model, list_models, register_model, resolve_name

__all__ = ["create_model", "list_models", "register_model", "resolve_name"]
