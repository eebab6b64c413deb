"""The `load` step: a model source (file, export folder, example, gist, import path or
module object) becomes an nn.Module and the `ModelConfig` that describes it."""

from utils.errors import GistError, LoadError
from utils.loading.config import CONFIG_FIELDS, ModelConfig, edge_pair
from utils.loading.construction import ConfigNamespace
from utils.loading.discovery import FACTORY_NAMES
from utils.loading.sources import LoadedModel, load_model

__all__ = [
    "CONFIG_FIELDS",
    "FACTORY_NAMES",
    "ConfigNamespace",
    "GistError",
    "LoadError",
    "LoadedModel",
    "ModelConfig",
    "edge_pair",
    "load_model",
]
