"""Training checkpoints: one uncompressed .npz holding everything a run needs to go on bit for bit.

Arrays (plain NumPy, loaded without pickle): `param/<name>` and `buffer/<name>` (the model's
tensors), `optim/<name>` (momentum, or Adam's m and v, and the step counter), `rng/dropout` (the C
generator's state words), `norm/<key>` (the fitted input standardisation) and `meta`, a JSON string:
format and version, the spec text, its sha256 and the parameter values it was lowered with, the
epoch, the numpy shuffling generator's state, the config, the history and the class names.
Writes are atomic (temp file, fsync, rename, fsync of the folder). Details: docs/training.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .data import Normalizer
from .errors import DataError
from .runtime import Model, Network, load, write_npz_atomic

FORMAT, VERSION = "netc-checkpoint", 1


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: dict
    arrays: dict[str, np.ndarray]

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        return {k.split("/", 1)[1]: v for k, v in self.arrays.items() if k.startswith(prefix + "/")}

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer.from_dict(self.group("norm"))

    def network(self) -> Network:
        """The network the checkpoint was trained on, lowered again from its own spec text."""
        return load(self.meta["spec"], **self.meta["params"])


def spec_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save(path: str | os.PathLike, model: Model, normalizer: Normalizer, meta: dict) -> None:
    """Write model state, normalisation and meta (the spec and hash are added here)."""
    net = model.net
    meta = {"format": FORMAT, "version": VERSION, "netc": __version__, "network": net.name,
            "spec": net.source, "spec_sha256": spec_sha256(net.source),
            "params": dict(net.params), "dtype": str(model.dtype),
            "optimizer": model.plan.optimizer, **meta}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays |= {f"param/{k}": v for k, v in model.params.items()}
    arrays |= {f"buffer/{k}": v for k, v in model.buffers.items()}
    arrays |= {f"optim/{k}": v for k, v in model.optimizer_state.items()}
    arrays |= {f"norm/{k}": v for k, v in normalizer.to_dict().items()}
    arrays["rng/dropout"] = model.rng_state
    write_npz_atomic(Path(path), arrays)


def read(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except FileNotFoundError:
        raise DataError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable netc checkpoint ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a netc checkpoint",
                        hint="eval and predict take the checkpoint.npz written by `netc train`")
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: checkpoint format version {meta.get('version')}, this netc "
                        f"reads version {VERSION}")
    return Checkpoint(path, meta, arrays)


def check_network(ckpt: Checkpoint, network: Network, where: str = "the spec") -> None:
    """Refuse a checkpoint trained on a different network (layers, input, loss or parameters);
    comments and layout of the spec text may differ."""
    theirs, ours = ckpt.network().net, network.net
    if theirs == ours:
        return
    if theirs.params != ours.params:
        diff = f"parameters {_params(theirs.params)} (here {_params(ours.params)})"
    elif theirs.input != ours.input:
        diff = f"input {'x'.join(map(str, theirs.input))} (here {'x'.join(map(str, ours.input))})"
    elif len(theirs.layers) != len(ours.layers):
        diff = f"{len(theirs.layers)} layers (here {len(ours.layers)})"
    elif theirs.loss != ours.loss:
        diff = f"loss {theirs.loss} (here {ours.loss})"
    else:
        a, b = next((a, b) for a, b in zip(theirs.layers, ours.layers) if a != b)
        diff = f"layer {a.label!r} = {a!r} (here {b.label!r} = {b!r})"
    raise DataError(f"{ckpt.path} was trained on a different network: {diff}",
                    hint=f"use the checkpoint with the spec it was trained on (network "
                         f"'{theirs.name}', spec sha256 {ckpt.meta['spec_sha256'][:12]}) and "
                         f"the same -D values; {where} differs")


def _params(params: tuple[tuple[str, float], ...]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in params) or "none"


def restore(model: Model, ckpt: Checkpoint, *, training: bool = True) -> None:
    """Copy the checkpoint's tensors into the model; training=True also restores the optimizer
    state and the dropout generator (the model must use the checkpoint's optimizer)."""
    groups = [("param", model.params), ("buffer", model.buffers)]
    if training:
        if model.plan.optimizer != ckpt.meta["optimizer"]:
            raise DataError(f"{ckpt.path} holds {ckpt.meta['optimizer']} state; cannot resume "
                            f"with {model.plan.optimizer}",
                            hint="resume with the optimizer the run was started with")
        groups += [("optim", model.optimizer_state), ("rng", {"dropout": model.rng_state})]
    for prefix, views in groups:
        stored = ckpt.group(prefix)
        for name, view in views.items():
            if name not in stored or stored[name].shape != view.shape:
                raise DataError(f"{ckpt.path}: {prefix}/{name} is missing or has the wrong "
                                f"shape; the file does not match the network")
            view[...] = stored[name]
