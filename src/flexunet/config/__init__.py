"""Config: the original's INI format, parsed safely into typed frozen sections."""
from .loader import ConfigWarning, config_from_dict, default_config, load_config, reference_markdown
from .schema import Config

__all__ = ["Config", "ConfigWarning", "config_from_dict", "default_config", "load_config", "reference_markdown"]
