"""bench/perf.py's PyTorch side: the same network as a torch.nn.Sequential built from netc's IR,
with netc's initial weights copied in, trained with the same loss (softmax cross-entropy on the
logits) and optimizer (SGD, momentum). Optional: only used when torch imports."""
from __future__ import annotations

import numpy as np

from netc import ir


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class TorchNet:
    def __init__(self, net: ir.Net, model, threads: int, lr: float = 0.01,
                 momentum: float = 0.9):
        import torch
        from torch import nn
        torch.set_num_threads(threads)
        self.torch = torch
        mods = []
        for layer in net.layers:
            match layer:
                case ir.Conv():
                    assert layer.table is None
                    mods.append(nn.Conv2d(_in_channels(net, model, layer), layer.out_channels,
                                          layer.kernel, layer.stride, layer.pad,
                                          groups=layer.groups, bias=layer.bias))
                case ir.FC():
                    mods += [nn.Flatten(), nn.Linear(_in_size(model, layer), layer.units,
                                                     bias=layer.bias)]
                case ir.Pool():
                    cls = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
                    mods.append(cls(layer.kernel, layer.stride, layer.pad))
                case ir.Act():
                    mods.append(_act(nn, layer.fn))
                case ir.Flatten():
                    mods.append(nn.Flatten())
                case ir.Softmax():
                    mods.append(nn.Flatten())  # the loss takes logits
                    continue
                case _:
                    raise NotImplementedError(layer.kind)
            if getattr(layer, "act", None) is not None and not isinstance(layer, ir.Act):
                mods.append(_act(nn, layer.act))
        self.net = nn.Sequential(*mods)
        self._weights = [model.params[k].copy() for k in _param_order(net, model)]
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum)
        self.loss = nn.CrossEntropyLoss()
        self.reset()

    def reset(self) -> None:
        """netc's initial weights, fresh optimizer state."""
        with self.torch.no_grad():
            for p, w in zip(self.net.parameters(), self._weights):
                p.copy_(self.torch.from_numpy(w.reshape(p.shape)))
        self.opt.state.clear()

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        xt, yt = self.torch.from_numpy(x), self.torch.from_numpy(y.astype(np.int64))
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(xt), yt)
        loss.backward()
        self.opt.step()
        return loss.item()

    def forward(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.torch.softmax(self.net(self.torch.from_numpy(x)), 1).numpy()


def _act(nn, fn: ir.Activation):
    if fn.kind == "relu":
        return nn.ReLU()
    if fn.kind == "tanh":
        assert fn.a == 1.0 and fn.b == 1.0
        return nn.Tanh()
    assert fn.a == 1.0
    return nn.Sigmoid()


def _in_channels(net, model, layer) -> int:
    return model.shapes.inputs[net.layers.index(layer)][0]


def _in_size(model, layer) -> int:
    c, h, w = model.shapes.inputs[model.net.layers.index(layer)]
    return c * h * w


def _param_order(net, model) -> list[str]:
    """netc's parameter names in torch's order: per layer, weight then bias."""
    names = []
    for layer in net.layers:
        for suffix in ("weight", "bias"):
            if f"{layer.label}.{suffix}" in model.params:
                names.append(f"{layer.label}.{suffix}")
    return names


def worker(argv: list[str]) -> None:
    """`python bench/perf_torch.py NET THREADS`, then commands on stdin, one answer line each:
    `case train 64` (or `case infer 1`) sets up that case and warms it up (answers `ok`);
    `run N` times N calls (answers the seconds). bench/perf.py keeps PyTorch in its own process
    (two OpenMP runtimes in one process, each spinning its idle threads, slow both) and
    alternates its repeats with netc's, so both meet the same machine."""
    import sys
    import time

    import perf
    name, threads = argv
    network = perf.netc.load(perf.NETS[name])
    model = network.compile(batch=1)  # only for netc's initial weights (init(0))
    tnet = TorchNet(network.net, model, int(threads), perf.LR, perf.MOMENTUM)
    classes = network.shapes.outputs[-1][0]
    fn = None
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "case":
            kind, b = rest[0], int(rest[1])
            x, y = perf.data(network.net.input, b, classes)
            tnet.reset()
            fn = (lambda: tnet.train_step(x, y)) if kind == "train" else (lambda: tnet.forward(x))
            fn()
            answer = "ok"
        else:
            t0 = time.perf_counter()
            for _ in range(int(rest[0])):
                fn()
            answer = repr(time.perf_counter() - t0)
        print(answer, flush=True)


if __name__ == "__main__":
    import sys
    worker(sys.argv[1:])
