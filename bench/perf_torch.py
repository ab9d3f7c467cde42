"""bench/perf.py's PyTorch side: the same network as a torch module built from netc's IR (graphs
included), with netc's initial weights copied in, trained with the same loss (softmax
cross-entropy on the logits) and optimizer (SGD, momentum). Optional: only used when torch
imports."""
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
        self.net = _Graph(nn, net, model)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum)
        self.loss = nn.CrossEntropyLoss()
        self._start = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.reset()

    def reset(self) -> None:
        """netc's initial weights and statistics, fresh optimizer state."""
        self.net.load_state_dict(self._start)
        self.net.train()
        self.opt.state.clear()

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        xt, yt = self.torch.from_numpy(x), self.torch.from_numpy(y.astype(np.int64))
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(xt), yt)
        loss.backward()
        self.opt.step()
        return loss.item()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.net.eval()
        with self.torch.inference_mode():
            return self.torch.softmax(self.net(self.torch.from_numpy(x)), 1).numpy()


def _Graph(nn, net: ir.Net, model):
    """The net as one torch module: a module per layer (identities for add and concat), run in
    the IR's order, each reading the outputs its inputs name; the final softmax is left to the
    loss, which takes logits. netc's initial parameters and running statistics are copied in."""
    import torch

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(_module(nn, layer, model.shapes.inputs[i])
                                        for i, layer in enumerate(net.layers))

        def forward(self, x):
            outs = []
            for i, (layer, mod) in enumerate(zip(net.layers, self.layers)):
                reads = [x if j == ir.INPUT else outs[j] for j in net.inputs_of(i)]
                if isinstance(layer, ir.Add):
                    outs.append(sum(reads[1:], reads[0]))
                elif isinstance(layer, ir.Concat):
                    outs.append(torch.cat(reads, 1))
                else:
                    outs.append(mod(reads[0]))
            return outs[-1].flatten(1)

    graph = Graph()
    with torch.no_grad():
        for layer, mod in zip(net.layers, graph.layers):
            core = mod[0] if isinstance(mod, nn.Sequential) else mod
            for name, tensor in [*core.named_parameters(), *core.named_buffers()]:
                key = f"{layer.label}.{name}"
                source = model.params.get(key, model.buffers.get(key))
                if source is not None:
                    tensor.copy_(torch.from_numpy(source.reshape(tensor.shape)))
    return graph


def _module(nn, layer: ir.AnyLayer, shape_in):
    c, h, w = shape_in

    class FlatLinear(nn.Linear):  # netc's fc flattens its input
        def forward(self, x):
            return super().forward(x.flatten(1))[:, :, None, None]

    class BatchNorm(nn.BatchNorm1d):  # per channel, over maps or over features alike
        def forward(self, x):
            return super().forward(x.flatten(2)).reshape(x.shape)

    match layer:
        case ir.Conv():
            assert layer.table is None
            core = nn.Conv2d(c, layer.out_channels, layer.kernel, layer.stride, layer.pad,
                             groups=layer.groups, bias=layer.bias)
        case ir.FC():
            core = FlatLinear(c * h * w, layer.units, bias=layer.bias)
        case ir.Pool():
            cls = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
            core = cls(layer.kernel, layer.stride, layer.pad)
        case ir.Act():
            return _act(nn, layer.fn)
        case ir.BatchNorm():
            return BatchNorm(c, eps=layer.eps, momentum=layer.momentum)
        case ir.GlobalAvgPool():
            return nn.AdaptiveAvgPool2d(1)
        case ir.Dropout():
            return nn.Dropout(layer.p)
        case ir.Flatten():
            return nn.Flatten()
        case ir.Softmax() | ir.Add() | ir.Concat():  # the loss takes logits; merges: forward()
            return nn.Identity()
        case _:
            raise NotImplementedError(layer.kind)
    act = getattr(layer, "act", None)
    return nn.Sequential(core, *([_act(nn, act)] if act is not None else []))


def _act(nn, fn: ir.Activation):
    if fn.kind == "relu":
        return nn.ReLU()
    if fn.kind == "tanh":
        assert fn.a == 1.0 and fn.b == 1.0
        return nn.Tanh()
    assert fn.a == 1.0
    return nn.Sigmoid()



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
