"""netc: a compiler from a small network-description language to fast C.

The API below loads on first use (PEP 562): `import netc` itself imports nothing, so the `netc`
command (netc/__main__.py) has its Ctrl-C handling in place before any other module loads.
"""
__version__ = "0.1.0"

_LAZY = {"Model": "runtime", "Network": "runtime", "load": "runtime", "load_trained": "train",
         **dict.fromkeys(["BuildError", "DataError", "InputError", "NetcError", "SpecError"],
                         "errors")}

__all__ = ["BuildError", "DataError", "InputError", "Model", "NetcError", "Network", "SpecError",
           "__version__", "load", "load_trained"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'netc' has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
