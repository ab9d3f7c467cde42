"""`netc report`: the analyses as one JSON-ready dict, and the text tables rendered from it.

    data(lenet5, analyze(lenet5), batch=32)["layers"][0]
      -> {"label": "c1", "type": "conv", "summary": "conv 6 5×5 tanh", "out": [6, 28, 28],
          "params": 156, "connections": 122304, "rf": {"size": [5, 5], ...}, ...}

The text is drawn from the dict, so the table and --json never disagree. Schema: docs/report.md.
Pure: no I/O.
"""
from __future__ import annotations

import dataclasses
import textwrap

from . import __version__, ir
from .passes import Analysis, memory
from .passes.receptive import PIXEL, Reach, feature_index

SCHEMA_VERSION = 2  # 2: every layer lists its inputs (graphs)
CONVENTIONS = ("FLOPs = 2 × MACs (conv/fc/subsample/batchnorm multiplies only); a training step "
               "= 3 × forward\nrf size/jump/start in input pixels: 0-indexed pixel centres, "
               "padding included")


def data(net: ir.Net, analysis: Analysis, batch: int, optimizer: str = "sgd",
         threads: int = 1) -> dict:
    """Everything `netc report` shows, with the training memory of passes.memory's plan."""
    a = analysis
    plan = memory.plan(net, a.shapes, batch, a.cost.dtype, optimizer, threads)
    rows = zip(net.layers, a.shapes.inputs, a.shapes.outputs, a.params.layers, a.rf,
               a.cost.layers)
    feature = feature_index(net, a.shapes)
    return {
        "schema_version": SCHEMA_VERSION,
        "netc_version": __version__,
        "name": net.name,
        "input": list(net.input),
        "loss": net.loss,
        "bindings": dict(net.params),
        "layers": [{
            "index": i,
            "label": layer.label,
            "type": layer.kind,
            "inputs": [net.input_label(j) for j in net.inputs_of(i)],
            "summary": summary(layer),
            "attrs": _attrs(layer),
            "in": list(shape_in),
            "out": list(shape_out),
            "params": p.total,
            "weights": p.weights,
            "biases": p.biases,
            "buffers": p.buffers,
            "connections": p.connections,
            "rf": _field(field),
            "macs": c.macs,
            "flops": c.flops,
            "param_bytes": c.param_bytes,
            "act_bytes": c.act_bytes,
        } for i, (layer, shape_in, shape_out, p, field, c) in enumerate(rows)],
        "totals": {
            "params": a.params.total,
            "weights": a.params.weights,
            "biases": a.params.biases,
            "buffers": a.params.buffers,
            "connections": a.params.connections,
            "macs": a.cost.macs,
            "flops": a.cost.flops,
            "train_macs": a.cost.train_macs,
            "train_flops": a.cost.train_flops,
            "param_bytes": a.cost.param_bytes,
            "buffer_bytes": a.cost.buffer_bytes,
            "act_bytes": a.cost.act_bytes,
        },
        "final_rf": {"layer": net.layers[feature].label if feature >= 0 else None,
                     **_field(a.rf[feature] if feature >= 0 else PIXEL)},
        "training": {"batch": batch, "dtype": a.cost.dtype, "optimizer": optimizer,
                     "threads": threads, "bytes": plan.total_bytes,
                     "by_role": plan.bytes_by_role()},
        "warnings": [{"layer": w.layer.label, "message": w.message,
                      "where": str(w.layer.span) if w.layer.span else None}
                     for w in a.shapes.warnings],
    }


def reach_data(net: ir.Net, reach: Reach) -> dict:
    """--rf-from: per layer on a path to `reach.label`, the extent in its input and output."""
    return {"layer": reach.label,
            "layers": [{"index": k, "label": net.layers[k].label, "input": list(i),
                        "output": list(o)}
                       for k, (i, o) in enumerate(zip(reach.inputs, reach.outputs))
                       if i is not None]}


def summary(layer: ir.AnyLayer) -> str:
    """Type and arguments in a few characters: `conv 64 3×3 p1 relu`, `maxpool 2×2 s2`."""
    match layer:
        case ir.Conv():
            extra = [f"g{layer.groups}"] if layer.groups > 1 else []
            extra += [f"table {layer.table.name}"] if layer.table else []
            extra += [] if layer.bias else ["nobias"]
            return " ".join([f"conv {layer.out_channels}", *_window_args(layer), *extra,
                             *_act(layer.act)])
        case ir.Pool():
            return " ".join([f"{layer.mode}pool", *_window_args(layer)])
        case ir.Subsample():
            return " ".join(["subsample", *_window_args(layer), *_act(layer.act)])
        case ir.GlobalAvgPool():
            return "global avgpool"
        case ir.FC():
            return " ".join([f"fc {layer.units}", *([] if layer.bias else ["nobias"]),
                             *_act(layer.act)])
        case ir.Act():
            return _act(layer.fn)[0]
        case ir.Dropout():
            return f"dropout {layer.p:g}"
        case ir.Softmax() | ir.BatchNorm() | ir.Flatten() | ir.Add() | ir.Concat():
            return layer.kind
        case _:
            raise NotImplementedError(layer.kind)


def render(d: dict) -> str:
    """The per-layer table, its totals and the training memory, in ≤ 140 columns."""
    header = ("layer", "type", "output", "params", "connections", "rf", "jump", "start",
              "MACs", "FLOPs", "act/sample")
    rows = [(r["label"], r["summary"], shape_text(r["out"]), f"{r['params']:,}",
             f"{r['connections']:,}", *_rf(r["rf"]), _si(r["macs"]), _si(r["flops"]),
             _bytes(r["act_bytes"])) for r in d["layers"]]
    t, tr = d["totals"], d["training"]
    rows.append(("total", "", "", f"{t['params']:,}", f"{t['connections']:,}", "", "", "",
                 _si(t["macs"]), _si(t["flops"]), _bytes(t["act_bytes"])))
    align = "llrrrrrrrrr"
    number = {layer["label"]: n for n, layer in enumerate(d["layers"], 1)}
    reads = [_reads(d["layers"], k, number) for k in range(len(d["layers"]))]
    if any(reads):  # a graph: rows numbered, with what each reads unless it is the row above
        header = ("#", header[0], "reads", *header[1:])
        rows = [(str(k + 1), row[0], reads[k], *row[1:]) for k, row in enumerate(rows[:-1])] + \
            [("", rows[-1][0], "", *rows[-1][1:])]
        align = "rll" + align[1:]
    roles = ", ".join(f"{role} {_bytes(n)}" for role, n in tr["by_role"].items() if n)
    lines = [
        f"{d['name']}: input {shape_text(d['input'])}, loss {d['loss']}{_bindings(d['bindings'])}",
        "",
        _table(header, rows, align),
        "",
        f"params {t['params']:,} ({_bytes(t['param_bytes'])}), buffers {t['buffers']:,} "
        f"({_bytes(t['buffer_bytes'])})",
        f"forward per sample: {_si(t['macs'])} MACs = {_si(t['flops'])} FLOPs; training step: "
        f"{_si(t['train_macs'])} MACs = {_si(t['train_flops'])} FLOPs",
        f"activations per sample: {_bytes(t['act_bytes'])}",
        f"training memory at batch {tr['batch']} ({_setup(tr)}): "
        f"{_bytes(tr['bytes'])}",
        *textwrap.wrap(roles, 96, initial_indent="  ", subsequent_indent="  "),
        CONVENTIONS,
    ]
    return "\n".join(lines) + "\n"


def render_reach(d: dict) -> str:
    """Table 15.2's view of d["rf_from"]: one element of a layer's output, seen in every earlier
    layer's input. A fused activation gets its own row, as a separate activation layer would."""
    reach, rows = d["rf_from"], []
    for r in reach["layers"]:
        layer = d["layers"][r["index"]]
        rows.append((layer["label"], layer["summary"], _side(r["input"])))
        act = layer["attrs"].get("act")
        if act:
            rows.append(("", f"{_act_name(act)} (act=)", _side(r["output"])))
    after = d["layers"][reach["layers"][-1]["index"] + 1:]
    rows.append((after[0]["label"], after[0]["summary"], "1")
                if after and after[0]["inputs"] == [reach["layer"]] else ("(output)", "", "1"))
    numbered = [(str(n), *row) for n, row in enumerate(rows, 1)]
    title = (f"receptive field of one element of {reach['layer']}'s output, in each layer's "
             f"input (pixels, padding included)")
    return f"{title}\n\n{_table(('#', 'layer', 'type', 'rf in input'), numbered, 'rllr')}\n"


def render_comparison(reports: list[dict]) -> str:
    """One row per parameter combination, the parameters that vary first: the design-rule
    family side by side."""
    names = [n for n in reports[0]["bindings"] if len({r["bindings"][n] for r in reports}) > 1]
    header = (*names, "params", "FLOPs", "final rf", "at", "train memory")
    rows = [(*(f"{r['bindings'][n]:g}" for n in names), f"{r['totals']['params']:,}",
             _si(r["totals"]["flops"]), _side(r["final_rf"]["size"]),
             r["final_rf"]["layer"] or "input", _bytes(r["training"]["bytes"]))
            for r in reports]
    tr = reports[0]["training"]
    return (f"{reports[0]['name']}: {len(reports)} combinations, training memory at batch "
            f"{tr['batch']} ({_setup(tr)})\n\n"
            f"{_table(header, rows, 'r' * len(names) + 'rrrlr')}\n")


# ---- helpers

def _reads(layers: list[dict], k: int, number: dict[str, int]) -> str:
    """What layer k reads, for a graph's table: "" when it is just the layer before it (as in
    a chain), else row numbers (#3, from `number`) and `input`."""
    before = layers[k - 1]["label"] if k else "input"
    if layers[k]["inputs"] == [before]:
        return ""
    return ", ".join(label if label == "input" else f"#{number[label]}"
                     for label in layers[k]["inputs"])


def _attrs(layer: ir.AnyLayer) -> dict:
    """Every IR field but label, inputs, span and origin, as JSON: tables as rows of X and ."""
    out = {}
    for f in dataclasses.fields(layer):
        value = getattr(layer, f.name)
        if f.name in ("label", "inputs", "span", "origin"):
            continue
        if isinstance(value, ir.Table):
            value = {"name": value.name,
                     "rows": ["".join("X" if c else "." for c in row) for row in value.rows]}
        elif isinstance(value, ir.Activation):
            value = _act_json(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _field(f) -> dict:
    return {"size": list(f.size), "jump": list(f.jump), "start": list(f.start)}


def _window_args(layer) -> list[str]:
    stride, pad = layer.stride, getattr(layer, "pad", (0, 0))
    return (["×".join(map(str, layer.kernel))]
            + ([f"s{_side(stride)}"] if stride != (1, 1) else [])
            + ([f"p{_side(pad)}"] if pad != (0, 0) else []))


def _act_json(act: ir.Activation) -> dict:
    return {"kind": act.kind, "a": act.a, "b": act.b}


def _act(act: ir.Activation | None) -> list[str]:
    return [_act_name(_act_json(act))] if act else []


def _act_name(act: dict) -> str:
    match act["kind"]:
        case "sigmoid" if act["a"] != 1:
            return f"sigmoid({act['a']:g})"
        case "tanh" if (act["a"], act["b"]) != (1, 1):
            return f"tanh({act['a']:g}, {act['b']:.4g})"
        case kind:
            return kind


def _rf(f: dict) -> tuple[str, str, str]:
    start = [f"{s:g}" for s in f["start"]]
    return _side(f["size"]), _side(f["jump"]), _side(start)


def _side(pair) -> str:
    """A square extent as one number, as the course writes it: 212 for 212×212."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


def shape_text(shape: list[int]) -> str:
    """A shape as the report (and the diagram) writes it: "6×28×28", or "120" for a vector."""
    return str(shape[0]) if shape[1:] == [1, 1] else "×".join(map(str, shape))


def _bindings(bindings: dict) -> str:
    return "; " + ", ".join(f"{k}={v:g}" for k, v in bindings.items()) if bindings else ""


def _si(n: int) -> str:
    """Three significant digits with a decimal prefix: 15470264320 -> 15.5G."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= 0.9995 * scale:  # what rounds to 1000 takes the next prefix
            return f"{n / scale:.3g}{prefix}"
    return str(n)


def _bytes(n: int) -> str:
    """Three significant digits with a binary prefix: 1048576 -> 1 MiB, 1040000 -> 0.992 MiB."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= 999.5 / 1024 * scale:  # what would print as 1000 or more takes the next unit
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], align: str) -> str:
    """Columns two spaces apart, each as wide as its widest cell; l/r per column."""
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows)])


def _setup(training: dict) -> str:
    threads = training["threads"]
    return (f"{training['dtype']}, {training['optimizer']}, "
            f"{threads} thread{'s' if threads > 1 else ''}")
