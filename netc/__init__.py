"""netc: a compiler from a small network-description language to fast C."""
from .errors import BuildError, DataError, InputError, NetcError, SpecError

__version__ = "0.1.0"

from .runtime import Model, Network, load  # noqa: E402  (codegen reads __version__)

__all__ = ["BuildError", "DataError", "InputError", "Model", "NetcError", "Network", "SpecError",
           "__version__", "load"]
