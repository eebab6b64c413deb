"""The `adapt` step: after it, nothing downstream guesses how to call a user's model."""

from utils.adapters.adapt import adapt
from utils.adapters.adapted_model import AdaptedModel
from utils.adapters.graph_executor import ComputationalGraphExecutor
from utils.adapters.profile import ModelProfile
from utils.adapters.signature import ModelSignatureInspector, SignatureInfo
from utils.errors import AdaptError, GraphError

__all__ = [
    "AdaptError",
    "AdaptedModel",
    "ComputationalGraphExecutor",
    "GraphError",
    "ModelProfile",
    "ModelSignatureInspector",
    "SignatureInfo",
    "UniversalModelAdapter",
    "adapt",
]


def __getattr__(name: str):
    # The Lightning adapter pulls in pytorch_lightning; import it only when asked for.
    if name == "UniversalModelAdapter":
        from utils.adapters.lightning_module import UniversalModelAdapter

        return UniversalModelAdapter
    raise AttributeError(name)
