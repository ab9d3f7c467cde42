"""netc: a compiler from a small network-description language to fast C."""
from .errors import BuildError, DataError, NetcError, SpecError

__version__ = "0.1.0"

__all__ = ["BuildError", "DataError", "NetcError", "SpecError", "__version__"]
