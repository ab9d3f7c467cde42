"""The `netc` command: one `cmd_<name>(args) -> int` and one parser block per subcommand.

    netc report examples/lenet5.net -D s=2 --batch 64   ->  the report table on stdout, exit 0

main() is the single error boundary: a NetcError prints its format() (file:line:col, the line, a
caret) and exits with its exit_code (2 for a bad spec); an unreadable file prints one line and
exits 2; argparse's own errors exit 2; Ctrl-C prints "interrupted" and exits 130; a closed stdout
(`netc train | head -3`) ends the command quietly with 141, as a tool killed by SIGPIPE. No
traceback for anything the user can fix. Messages show control characters as escapes (\\x1b):
they quote paths and file contents, which must not drive the terminal.

Only the standard library is imported before main() runs: the rest (numpy, lark, cffi: about
0.6 s) loads inside the commands, where Ctrl-C is caught.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import signal
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import NetcError
from .files import write_atomic
from .span import escape

MAX_COMBINATIONS = 256  # a comparison table longer than this is a typo, not a study


# ---- shared by every subcommand that reads a spec

def define(text: str) -> tuple[str, tuple[float, ...]]:
    """argparse type of -D: `name=value` or `name=a..b`, an integer range with both ends."""
    name, sep, value = (part.strip() for part in text.partition("="))
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    lo, dots, hi = value.partition("..")
    try:
        if not dots:
            return name, (_number(value),)
        first, last = _number(lo, whole=True), _number(hi, whole=True)
    except ValueError:
        form = "a range of integers, as in N=1..3" if dots else "a number"
        raise argparse.ArgumentTypeError(f"{name}: expected {form}, got {_shown(value)}") from None
    if not 1 <= last - first + 1 <= MAX_COMBINATIONS:
        raise argparse.ArgumentTypeError(
            f"{name}: a range holds 1 to {MAX_COMBINATIONS} values, smaller end first")
    return name, tuple(range(first, last + 1))


def bindings(defines: list[tuple[str, tuple[float, ...]]]) -> list[dict[str, float]]:
    """Every combination of the -D values, in the order given (the last name varies fastest)."""
    names = [name for name, _ in defines]
    for name in names:
        if names.count(name) > 1:
            raise NetcError(f"-D {name} is given more than once")
    combos = [dict(zip(names, values)) for values in itertools.product(*(v for _, v in defines))]
    if len(combos) > MAX_COMBINATIONS:
        raise NetcError(f"-D gives {len(combos):,} combinations, more than {MAX_COMBINATIONS}")
    return combos


def _number(text: str, whole: bool = False) -> float:
    """An integer stays one (a count); anything else must be a finite float. Either must lie in
    float range (about ±1.8e308): a 400-digit integer is refused here, not overflowed later."""
    try:
        value = int(text)
    except ValueError:
        if whole:
            raise
        value = float(text)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        finite = False
    if not finite:
        raise ValueError(text)
    return value


def _shown(text: str) -> str:
    """text quoted, cut short: a 400-digit value need not be echoed whole."""
    return repr(text) if len(text) <= 40 else f"{text[:24]!r}... ({len(text)} characters)"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}")
    return value


def _threads(text: str) -> int:
    from .runtime import MAX_THREADS
    value = _positive(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_THREADS} threads, got {text!r}")
    return value


def _add_trained(p: argparse.ArgumentParser) -> None:
    """FILE CKPT [-D ...]: a trained network."""
    p.add_argument("file", metavar="FILE", help="the .net spec the checkpoint was trained on")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint.npz written by netc train")
    _add_defines(p)


def _add_defines(parser: argparse.ArgumentParser, ranges: bool = False) -> None:
    """-D; only `report` compares a range of values (a..b), the other commands take one."""
    parser.add_argument("-D", dest="defines", metavar="NAME=VALUE", type=define, action="append",
                        default=[], help=("set a parameter of the spec; a..b is an integer "
                                          "range, one table row per value") if ranges else
                        "set a parameter of the spec to one value")


# ---- netc report

def cmd_report(args: argparse.Namespace) -> int:
    from . import report
    from .lower import load_spec
    from .passes import analyze
    from .passes.receptive import rf_from
    combos = bindings(args.defines)
    if len(combos) > 1 and args.rf_from:
        raise NetcError("--rf-from reports one network, but -D gives a range")
    reports, warnings = [], {}  # warnings: an ordered set over the combinations
    for overrides in combos:
        net = load_spec(Path(args.file), overrides)
        analysis = analyze(net)
        d = report.data(net, analysis, args.batch, args.optimizer, args.threads)
        if args.rf_from:
            if args.rf_from not in {layer.label for layer in net.layers}:
                raise NetcError(f"--rf-from: no layer is labelled {args.rf_from!r}; the labels are "
                                f"{', '.join(layer.label for layer in net.layers)}")
            d["rf_from"] = report.reach_data(net, rf_from(net, analysis.shapes, args.rf_from))
        reports.append(d)
        warnings.update((w.format(), None) for w in analysis.shapes.warnings)
    for warning in warnings:
        print(escape_lines(warning), file=sys.stderr)
    if len(reports) > 1:
        out = ({"schema_version": report.SCHEMA_VERSION, "comparison": reports} if args.json
               else report.render_comparison(reports))
    elif args.json:
        out = reports[0]
    else:
        out = report.render_reach(reports[0]) if args.rf_from else report.render(reports[0])
    sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n" if args.json else out)
    return 0


# ---- netc compile

def _one_network(args: argparse.Namespace, what: str):
    """The spec's one network (a -D range is refused), its shape warnings on stderr."""
    from .lower import load_spec
    from .runtime import Network
    combos = bindings(args.defines)
    if len(combos) > 1:
        raise NetcError(f"{what} one network, but -D gives a range")
    network = Network(load_spec(Path(args.file), combos[0]))
    for warning in network.shapes.warnings:
        print(escape_lines(warning.format()), file=sys.stderr)
    return network


# ---- netc diagram

def cmd_diagram(args: argparse.Namespace) -> int:
    from . import diagram
    suffix = Path(args.out).suffix.lower() if args.out else None
    if suffix is not None and suffix not in diagram.FORMATS:
        raise NetcError(f"-o: the file name must end in {', '.join(diagram.FORMATS)}, "
                        f"got {_shown(args.out)}")
    network = _one_network(args, "diagram draws")
    text = diagram.dot(network.net, network.analysis)
    if suffix is None:
        sys.stdout.write(text)
        return 0
    write_atomic(args.out, diagram.image(text, suffix), "the diagram")
    print(escape_lines(f"wrote {args.out}"))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from . import build
    network = _one_network(args, "compile builds")
    source = network.emit(args.batch, args.dtype, args.optimizer)
    if args.emit_c:
        sys.stdout.write(source.text)
        return 0
    lib = build.build(source.text, source.cdef, name=source.name)
    if lib.warnings:
        print(escape_lines(lib.warnings), file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c_path, h_path, so_path = (out / f"{source.name}{ext}" for ext in (".c", ".h", ".so"))
    # Each file whole or not at all (a full disk leaves no truncated .so), never through a link.
    write_atomic(c_path, source.text.encode(), "the C source")
    write_atomic(h_path, source.header.encode(), "the C header")
    write_atomic(so_path, lib.path.read_bytes(), "the library")
    plan = network.plan(args.batch, args.dtype, args.optimizer)
    print(escape_lines(f"wrote {c_path}, {h_path}, {so_path}\n{network.net.name}: batch 1 to "
                       f"{args.batch}, {args.dtype}, {args.optimizer}; the library needs "
                       f"{plan.total_bytes:,} bytes (mem {plan.mem_size:,} reals, imem "
                       f"{plan.imem_size:,} ints; docs/api.md)"))
    return 0


# ---- netc gradcheck

def cmd_gradcheck(args: argparse.Namespace) -> int:
    from .gradcheck import gradcheck
    network = _one_network(args, "gradcheck checks")
    _check_train_batch(network, args.batch)  # the gradients are those of training mode
    result = gradcheck(network, args.seed, batch=args.batch, tol=args.tol, coords=args.coords)
    print(result.format())
    return 0 if result.ok else 1


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _check_train_batch(network, batch: int) -> None:
    """The runtime's refusal of a one-sample BatchNorm batch, with a hint about the option."""
    least = network.min_train_batch
    network.check_train_batch(batch, hint=f"train on batches of at least {least} samples: "
                                          f"--batch {least} or more")


# ---- netc train / eval / predict (docs/training.md)

TRAIN_OPTIONS = ("data", "epochs", "batch", "lr", "momentum", "weight_decay", "optimizer",
                 "schedule", "normalize", "val_split", "seed", "threads", "deterministic",
                 "early_stop", "augment")


def _trained_network(args: argparse.Namespace, ckpt=None):
    """The spec with -D, or, when none is given, with the parameter values of the checkpoint;
    its shape warnings, and the checkpoint's non-finite weights, on stderr."""
    from .lower import declared_params, load_spec
    from .runtime import Network
    combos = bindings(args.defines)
    if len(combos) > 1:
        raise NetcError(f"{args.command} takes one network, but -D gives a range")
    overrides = combos[0]
    if ckpt is not None and not args.defines:
        declared = {name.lower() for name in declared_params(Path(args.file))}
        overrides = {k: v for k, v in ckpt.meta["params"].items() if k.lower() in declared}
    network = Network(load_spec(Path(args.file), overrides))
    for warning in network.shapes.warnings:
        print(escape_lines(warning.format()), file=sys.stderr)
    if ckpt is not None and (bad := ckpt.nonfinite()):
        print(f"warning: {ckpt.path}: {', '.join(bad)} hold NaN or infinite values; the "
              f"network's outputs are meaningless", file=sys.stderr)
    return network


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    started = distributed.launched_size()
    if args.ranks and started == 1 and args.ranks > 1:
        return _launch(args)
    if args.ranks and args.ranks != started:
        raise NetcError(f"--ranks {args.ranks}, but mpiexec started {started} ranks",
                        hint="give one of them: mpiexec -n N, or --ranks N alone")
    team = distributed.join()
    if team.size == 1:
        return _train(args, team)
    if not team.root:  # rank 0 says what all do ("compiling ...")
        logging.getLogger("netc").setLevel(logging.WARNING)
    # A rank that fails alone must end the job (team.end), whatever failed: its message first.
    try:
        code = _reported(lambda: _train(args, team), team)
    except BaseException:  # a bug: its traceback, then the job ends
        print(f"rank {team.rank}: internal error:", file=sys.stderr)
        traceback.print_exc()
        code = 1
    return team.end(code)


def _launch(args: argparse.Namespace) -> int:
    """--ranks N outside mpiexec: run this very command under `mpiexec -n N` (MPICH's, from the
    mpi extra, beside this Python first) and wait for it. mpiexec runs in a session of its own,
    so that Ctrl-C reaches it once, from here (a second one makes it kill the ranks at once),
    and it passes it on to every rank."""
    import shutil
    import subprocess

    from .distributed import INSTALL
    try:
        import mpi4py  # noqa: F401  (the package only: MPI itself starts in the ranks)
    except ImportError:
        raise NetcError(f"--ranks {args.ranks} needs mpi4py, which is not installed",
                        hint=INSTALL) from None
    where = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    mpiexec = shutil.which("mpiexec", path=where)
    if mpiexec is None:
        raise NetcError(f"--ranks {args.ranks} needs mpiexec, which is not on the PATH",
                        hint=INSTALL)
    job = subprocess.Popen([mpiexec, "-n", str(args.ranks), sys.executable, "-m", "netc",
                            *args.argv], stdin=subprocess.DEVNULL, start_new_session=True)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: job.send_signal(signum))
    try:
        return job.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def _train(args: argparse.Namespace, team) -> int:
    from dataclasses import asdict

    from . import checkpoint, data, train
    given = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if team.size > 1 and "threads" not in given:  # on a resume too: the ranks may be others
        given["threads"] = team.default_threads()
    try:
        ckpt = checkpoint.read(args.resume) if args.resume else None
        # A resumed run goes on with its own settings; options given again override them.
        config = train.Config.from_dict({**asdict(ckpt.config), **given} if ckpt else given)
        network = _trained_network(args, ckpt)
        if config.batch:  # 0: the whole training set
            _check_train_batch(network, config.batch)
        dataset = data.load(config.data)
        curves = _live_curves() if team.root else None
        # paths and data set names from the command line reach stdout escaped
        train.fit(network, dataset, config, out=args.out, resume=args.resume,
                  echo=lambda line: print(escape_lines(line)), on_log=curves and curves.update,
                  team=team)
        if curves and curves.finish():
            print(escape(f"curves: {curves.path}"))
    except train.Interrupted as e:
        if team.root:
            print(f"{_line_end()}interrupted: {escape(str(e))}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if team.root:
            print(f"{_line_end()}interrupted before training started: nothing was written",
                  file=sys.stderr)
        return 130
    return 0


def _live_curves():
    """DIR/curves.png drawn while training, or None without matplotlib: the plot extra is
    optional, and training goes on without it, silently (docs/training.md)."""
    from . import plot
    try:
        return plot.LiveCurves()
    except NetcError:
        return None


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plot
    plot.plot(args.runs, args.out)
    print(escape(f"curves: {args.out}"))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import checkpoint, data, train
    if args.plot:
        from . import plot
        plot.matplotlib_parts()  # what to install, before the minutes of compiling and evaluating
    ckpt = checkpoint.read(args.checkpoint)
    trained = train.load_trained(_trained_network(args, ckpt), ckpt)
    dataset = data.load(args.data or ckpt.config.data)
    split, which = (dataset.test, "test") if dataset.test is not None else (dataset.train, "all")
    result = trained.evaluate(split, f"{dataset.name} ({which})")
    # Class names come from a data file: escaped like every other text from a file.
    names = [escape(str(n)) for n in trained.classes or range(len(result.confusion))]
    print(escape_lines(f"{trained.model.net.name} on {dataset.name} ({which}, "
                       f"{result.count:,} samples)\n{result.summary()}\n"
                       "confusion matrix (rows: true class, columns: predicted):"))
    width = max(5, len(f"{result.confusion.max():,}") + 1)
    label = max(len(f"{i} {n}") for i, n in enumerate(names))
    print(" " * label + "".join(f"{i:>{width}}" for i in range(len(result.confusion))))
    for i, row in enumerate(result.confusion):
        print(f"{f'{i} {names[i]}' if names[i] != str(i) else str(i):<{label}}"
              + "".join(f"{v:>{width},}" for v in row))
    if args.plot:
        title = f"{trained.model.net.name} on {dataset.name} ({which}): {result.errors:,} errors"
        plot.write_picture(plot.draw_confusion(result.confusion, names, title), args.plot,
                           "the confusion matrix")
        print(escape(f"confusion matrix: {args.plot}"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """netc export: the trained network as a standalone C library (docs/deploy.md)."""
    from . import checkpoint, data
    from .interop import c_library
    from .train import fit_input
    if not args.c:
        raise NetcError("netc export needs a format: --c (a C library in -o DIR)")
    if args.out is None:
        raise NetcError("netc export --c writes a folder: give it with -o DIR")
    ckpt = checkpoint.read(args.checkpoint)
    network = _trained_network(args, ckpt)
    inputs = None
    if args.data:
        dataset = data.load(args.data)
        split = dataset.test if dataset.test is not None else dataset.train
        inputs = fit_input(split.x[:args.tests], network.net.input, args.data)
    done = c_library.export_c(ckpt, network, Path(args.out), prefix=args.prefix,
                              tests=args.tests, batch=args.batch, threads=args.threads,
                              inputs=inputs)
    print(escape_lines(
        f"wrote {', '.join(str(f) for f in done.files)}\n"
        f"{network.net.name} as {done.prefix}: arena {done.arena_bytes:,} bytes (without reuse: "
        f"{done.unshared_bytes:,}), weights {done.weights_bytes:,} bytes, up to {args.batch} "
        f"sample{'s' if args.batch > 1 else ''} a pass; self-test of {done.tests} samples: "
        f"make -C {args.out} test"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import numpy as np

    from . import checkpoint, data, plot, train
    plot.matplotlib_parts()  # what to install, before compiling
    ckpt = checkpoint.read(args.checkpoint)
    network = _trained_network(args, ckpt)
    layers = network.net.layers
    if args.filters is not None:
        if args.layers:
            raise NetcError("--layers goes with --maps or --index, not --filters")
        convs = [layer.label for layer in layers if layer.kind == "conv"]
        if args.filters not in convs:
            what = "not a conv layer" if args.filters in [layer.label for layer in layers] \
                else "no such layer"
            raise NetcError(f"--filters {args.filters}: {what}; the conv layers: "
                            f"{', '.join(convs) or 'none'}")
        trained = train.load_trained(network, ckpt, batch=1)
        figure = plot.draw_filters(trained.model.params[f"{args.filters}.weight"], args.filters,
                                   first=args.filters == layers[0].label)
    else:
        labels = [layer.label for layer in layers]
        chosen = args.layers.split(",") if args.layers else labels
        if unknown := [c for c in chosen if c not in labels]:
            raise NetcError(f"--layers: no layer {', '.join(unknown)}; the layers: "
                            f"{', '.join(labels)}")
        trained = train.load_trained(network, ckpt, batch=1)
        if args.index is not None:
            dataset = data.load(ckpt.config.data)
            split = dataset.test if dataset.test is not None else dataset.train
            if args.index >= len(split):
                raise NetcError(f"--index {args.index}: the test set has {len(split):,} images, "
                                f"0 to {len(split) - 1:,}")
            raw, shown = split.x[args.index:args.index + 1], f"test image {args.index}"
            if split.y is not None:
                shown += f" (class {_class_name(trained, int(split.y[args.index]))})"
        else:
            image, notes = trained.conform(data.load_image(args.maps, keep_channels=True))
            if notes:
                print(escape(f"note: {args.maps}: {', '.join(notes)}"), file=sys.stderr)
            raw, shown = image[None], args.maps
        probs, maps = trained.feature_maps(raw, chosen, shown)
        best = int(np.argmax(probs)) if len(probs) > 1 else int(probs[0] >= 0.5)
        figure = plot.draw_maps(maps, f"{trained.model.net.name}: {shown} → "
                                      f"{_class_name(trained, best)}")
    plot.write_picture(figure, args.out, "the picture")
    print(escape(f"picture: {args.out}"))
    return 0


def _class_name(trained, index: int) -> str:
    names = trained.classes
    return str(names[index]) if names and index < len(names) else str(index)


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from . import checkpoint, data, train
    ckpt = checkpoint.read(args.checkpoint)
    trained = train.load_trained(_trained_network(args, ckpt), ckpt, batch=1)
    names = trained.classes
    for path in args.inputs:
        if args.raw:  # the network's input size bounds the image, checked from its header
            image = data.load_image(path, int(np.prod(trained.model.input_shape)))
        else:
            image, notes = trained.conform(data.load_image(path, keep_channels=True))
            if notes:  # on stderr: stdout is the prediction, clean JSON with --json
                print(escape(f"note: {path}: {', '.join(notes)}"), file=sys.stderr)
        probs = trained.predict(image[None], path)[0].astype(float)
        if len(probs) == 1:  # one output: the probability of class 1
            probs = np.array([1 - probs[0], probs[0]])
        top = np.argsort(-probs, kind="stable")[:args.top]
        name = (lambda i: names[i] if names and i < len(names) else str(i))  # noqa: E731
        if args.json:
            print(json.dumps({"input": path, "class": int(top[0]), "name": name(top[0]),
                              "probabilities": [round(p, 6) for p in probs]}))
        else:
            print(escape(f"{path}: {name(top[0])} ({100 * probs[top[0]]:.2f}%)   top: "
                         + ", ".join(f"{name(i)} {100 * probs[i]:.2f}%" for i in top)))
    return 0


def _batch(text: str) -> int:
    if text == "full":
        return 0
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'full', got {text!r}") from None


def _index(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}")
    return value


# ---- the parser and the error boundary

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netc", description="A compiler from a small network-description language to C.")
    parser.add_argument("--version", action="version", version=f"netc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser(
        "report", help="shapes, parameters, receptive fields, cost and memory of a spec",
        description="Print a table of every layer: output shape, params, connections, receptive "
                    "field, MACs/FLOPs, activation memory, and the training memory at a batch "
                    "size. A range (-D N=1..3) prints one row per combination instead. "
                    "Conventions and the JSON schema: docs/report.md.")
    p.add_argument("file", metavar="FILE", help="a .net spec")
    _add_defines(p, ranges=True)
    p.add_argument("--json", action="store_true", help="print JSON (schema in docs/report.md)")
    p.add_argument("--rf-from", metavar="LAYER",
                   help="the receptive field of one element of LAYER's output in every earlier "
                        "layer's input")
    p.add_argument("--batch", type=_positive, default=32, metavar="N",
                   help="batch size for the training memory (default 32)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="the optimizer whose state the training memory includes (default sgd)")
    p.add_argument("--threads", type=_threads, default=1, metavar="N",
                   help="threads the training memory is planned for: each gets its own gradient "
                        "and workspace copy (default 1)")
    p.set_defaults(run=cmd_report)

    p = commands.add_parser(
        "diagram", help="draw a spec as a Graphviz diagram (DOT, SVG or PNG)",
        description="One box per layer (label, type and arguments, parameters), coloured by "
                    "kind, edges labelled with the shape that flows on them, each copy of a "
                    "( )*N repetition in a dashed box. Prints the DOT text, or writes -o FILE: "
                    ".dot as text, .svg and .png rendered by Graphviz's dot program. "
                    "Details: docs/diagram.md.")
    p.add_argument("file", metavar="FILE", help="a .net spec")
    _add_defines(p)
    p.add_argument("-o", dest="out", metavar="FILE",
                   help="write FILE (.dot, .svg or .png) instead of printing the DOT text")
    p.set_defaults(run=cmd_diagram)

    p = commands.add_parser(
        "compile", help="generate the C for a spec and build it",
        description="Write the generated C source, its header and the built shared library "
                    "to DIR (the entry points and memory layout: docs/api.md). --emit-c prints "
                    "the C instead and builds nothing. Compiler flags: $NETC_CFLAGS.")
    p.add_argument("file", metavar="FILE", help="a .net spec")
    _add_defines(p)
    p.add_argument("-o", dest="out", metavar="DIR", default=".",
                   help="output directory (default: the current one)")
    p.add_argument("--emit-c", action="store_true", help="print the generated C and stop")
    p.add_argument("--batch", type=_positive, default=32, metavar="N",
                   help="the largest batch the library accepts (default 32)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the real type (default float32; float64 for gradient checks)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="the optimizer the training step applies (default sgd)")
    p.set_defaults(run=cmd_compile)

    p = commands.add_parser(
        "gradcheck", help="check the generated gradients against finite differences",
        description="Build the float64 variant, compare the gradient of every parameter tensor "
                    "and of the input with central differences on random data (coordinates "
                    "within a step of a relu or max-pool kink are counted and skipped), print "
                    "the worst relative error per layer, and exit 1 above the tolerance.")
    p.add_argument("file", metavar="FILE", help="a .net spec")
    _add_defines(p)
    p.add_argument("--tol", type=_tolerance, default=1e-6,
                   help="the largest relative error that passes (default 1e-6)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the data and weights (default 0)")
    p.add_argument("--batch", type=_positive, default=3, metavar="N",
                   help="samples in the random batch (default 3)")
    p.add_argument("--coords", type=_positive, default=24, metavar="N",
                   help="coordinates checked per tensor, at random (default 24)")
    p.set_defaults(run=cmd_gradcheck)

    p = commands.add_parser(
        "train", help="train a network on a data set, with checkpoints and a log",
        description="Train FILE on a data set (default: the MNIST subset shipped with netc; "
                    "images smaller than the input are zero-padded), print train/validation "
                    "loss and accuracy per epoch and the test accuracy at the end. Writes "
                    "DIR/checkpoint.npz after every epoch (atomically), DIR/log.jsonl and, "
                    "with the plot extra installed, DIR/curves.png. "
                    "Options left out take the defaults, or a resumed run's own values. "
                    "Everything: docs/training.md.")
    p.add_argument("file", metavar="FILE", help="a .net spec")
    _add_defines(p)
    p.add_argument("--data", metavar="NAME|PATH",
                   help="mnist-10k (default), mnist, fashion-mnist, cifar10, cifar100, "
                        "cifar100-coarse, xor, or a path: a folder (IDX, CSV, CIFAR or one "
                        "sub-folder of images per class), .npz or .csv")
    p.add_argument("--epochs", type=_positive, metavar="N", help="epochs (default 20)")
    p.add_argument("--batch", type=_batch, metavar="N|full",
                   help="mini-batch size; 1 is online learning, full the whole set (default 32)")
    p.add_argument("--lr", type=_nonnegative, help="learning rate (default 0.05; adam 0.001)")
    p.add_argument("--momentum", type=_nonnegative, help="sgd momentum (default 0.9)")
    p.add_argument("--weight-decay", type=_nonnegative, metavar="L",
                   help="L2 penalty ½L‖W‖² on the weights (default 5e-4)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="default sgd")
    p.add_argument("--schedule", choices=("const", "step", "cosine"),
                   help="learning-rate schedule over the epochs (default cosine)")
    p.add_argument("--normalize", choices=("none", "mean", "standard", "pca", "zca"),
                   help="input standardisation fitted on the training split (default standard)")
    p.add_argument("--val-split", type=_fraction, metavar="F",
                   help="fraction of the training set held out for validation (default 0.1)")
    p.add_argument("--seed", type=_seed, help="seed of weights, split, shuffling, dropout "
                                            "(default 0)")
    p.add_argument("--threads", type=_threads, metavar="N",
                   help="threads per step (default 1); the same threads give the same results")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="fixed batch chunks: the same results whatever the thread count")
    p.add_argument("--early-stop", type=int, metavar="N",
                   help="stop after N epochs without a better validation loss (default off)")
    p.add_argument("--augment", metavar="OPS",
                   help="random changes to training batches only: a comma-separated list of "
                        "crop:P, shift:S and flip, e.g. crop:4,flip; none for off (default off)")
    p.add_argument("--out", metavar="DIR",
                   help="where checkpoints and the log go (default runs/<network>, or the "
                        "resumed checkpoint's folder)")
    p.add_argument("--resume", metavar="CKPT", help="continue the run that wrote CKPT")
    p.add_argument("--ranks", type=_positive, metavar="N",
                   help="data-parallel training in N processes on this machine, started with "
                        "mpiexec (needs the mpi extra; docs/distributed.md)")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser(
        "plot", help="draw training curves from run logs (needs the plot extra)",
        description="Draw loss and accuracy per epoch, training and validation, with the test "
                    "result marked, from each RUN's log.jsonl into one PNG (SVG for a .svg "
                    "name); several runs are overlaid with a legend of their folder names. "
                    "Needs matplotlib: pip install 'netc[plot]'. Details: docs/training.md.")
    p.add_argument("runs", metavar="RUN", nargs="+",
                   help="a run folder (written by netc train --out) or its log.jsonl")
    p.add_argument("-o", dest="out", metavar="FILE", default="curves.png",
                   help="the .png or .svg to write (default curves.png)")
    p.set_defaults(run=cmd_plot)

    p = commands.add_parser(
        "eval", help="loss, accuracy, error count and confusion matrix of a trained network",
        description="Evaluate the checkpoint CKPT of FILE on the test split of the data it was "
                    "trained on, or of --data (on all of it when it has no test split).")
    _add_trained(p)
    p.add_argument("--data", metavar="NAME|PATH", help="default: the training run's data set")
    p.add_argument("--plot", metavar="FILE",
                   help="also draw the confusion matrix, counts in its cells, as a PNG "
                        "(SVG for a .svg name; needs the plot extra)")
    p.set_defaults(run=cmd_eval)

    p = commands.add_parser(
        "export", help="a trained network as a standalone C library",
        description="Write the checkpoint CKPT of FILE as C (--c): a dependency-free C99 "
                    "library for inference with its weights compiled in, a self-test against "
                    "netc's outputs, a Makefile and a README, into -o DIR. Details: "
                    "docs/deploy.md.")
    _add_trained(p)
    p.add_argument("--c", action="store_true", help="write a C library into -o DIR")
    p.add_argument("-o", dest="out", metavar="DIR", help="the folder to write (made if missing)")
    p.add_argument("--prefix", metavar="NAME",
                   help="the prefix of every exported symbol and file (default: the network's "
                        "name, lower case)")
    p.add_argument("--tests", type=_positive, default=10, metavar="N",
                   help="samples the self-test stores with netc's outputs (default 10)")
    p.add_argument("--data", metavar="NAME|PATH",
                   help="take the self-test's samples from this data set's test split "
                        "(default: uniform random inputs in [0, 1))")
    p.add_argument("--batch", type=_positive, default=1, metavar="N",
                   help="the most samples one pass through the arena holds (default 1)")
    p.add_argument("--threads", type=_positive, default=1, metavar="N",
                   help="batch chunks for OpenMP threads, in a -fopenmp build (default 1)")
    p.set_defaults(run=cmd_export)

    p = commands.add_parser(
        "show", help="draw a trained network's filters or feature maps (needs the plot extra)",
        description="Draw the kernels of a conv layer (--filters LAYER) as a grid with one "
                    "colour scale, or the input and each layer's feature maps for one image "
                    "(--maps IMAGE, or --index N of the test set), into a PNG or SVG. Needs "
                    "matplotlib: pip install 'netc[plot]'. Details: docs/training.md.")
    _add_trained(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--filters", metavar="LAYER", help="the conv layer whose kernels to draw")
    what.add_argument("--maps", metavar="IMAGE",
                      help="an image file (as netc predict takes) whose feature maps to draw")
    what.add_argument("--index", type=_index, metavar="N",
                      help="draw the feature maps of test image N (from 0) instead")
    p.add_argument("--layers", metavar="L1,L2,...",
                   help="the layers whose maps to draw, by label (default: every layer)")
    p.add_argument("-o", dest="out", metavar="FILE", required=True,
                   help="the .png or .svg to write")
    p.set_defaults(run=cmd_show)

    p = commands.add_parser(
        "predict", help="classify images with a trained network",
        description="Print the class and probabilities of each INPUT (.png, .pgm or .npy). "
                    "Each is fitted to the training images: channels converted, resized, "
                    "inverted when its background is the opposite of theirs (a 'note:' line "
                    "on stderr says what was done), zero-padded to the network's input and "
                    "standardised as in training. Details: docs/training.md.")
    _add_trained(p)
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image files")
    p.add_argument("--top", type=_positive, default=3, metavar="K",
                   help="how many classes to list (default 3)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per input with every probability")
    p.add_argument("--raw", action="store_true",
                   help="no conversion, resizing or inversion: the image must already fit "
                        "(PNG colour becomes gray)")
    p.set_defaults(run=cmd_predict)

    return parser


def main(argv: list[str] | None = None) -> int:
    log = logging.getLogger("netc")
    handler = _MessageHandler()  # "compiling lenet5 (first run; cached afterwards)", warnings
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        return _reported(lambda: _command(argv))
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _command(argv: list[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its message (or --help)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what --ranks runs again
    code = args.run(args)
    sys.stdout.flush()  # a closed pipe shows here, not at exit as "Exception ignored"
    return code


def _reported(run, team=None) -> int:
    """run()'s status, or the message and status of what it raised that the user can fix. In a
    data-parallel job (team) a rank that failed alone names itself; a failure all ranks reached
    together (team.settled) is told once, by rank 0."""
    def say(text: str) -> None:
        alone = team is not None and not team.settled
        if team is None or alone or team.root:
            print(f"rank {team.rank}: {text}" if alone else text, file=sys.stderr)
    try:
        return run()
    except NetcError as e:
        say(escape_lines(e.format()))
        return e.exit_code
    except KeyboardInterrupt:  # anywhere: importing, reading data, compiling
        print(_line_end(), end="", file=sys.stderr)
        say("interrupted")
        return 128 + signal.SIGINT
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        say(escape_lines(f"error: {where}{e.strerror or e}"))
        return 2
    except MemoryError:
        say("error: out of memory")
        return 2


def _line_end() -> str:
    """Ends the line ^C and a progress bar left on a terminal; nothing for a file or a pipe."""
    return "\n" if sys.stderr.isatty() else ""


def escape_lines(text: str) -> str:
    """text with every control character but the newlines between its lines written as an
    escape (\\x1b, \\r): messages quote paths and file contents, which must not reach the
    terminal raw."""
    return "\n".join(map(escape, text.split("\n")))


class _MessageHandler(logging.StreamHandler):
    """netc's log records on stderr as bare messages (they carry their own "warning: "), shown
    as escape_lines does."""

    def __init__(self):
        super().__init__(sys.stderr)  # main's stderr: a test's capture, or the terminal

    def format(self, record: logging.LogRecord) -> str:
        return escape_lines(record.getMessage())


def _stdout_closed() -> int:
    """The reader of stdout went away (`netc train | head -3`): stop quietly, with the status of
    a tool that SIGPIPE ended (128 + 13), as Unix tools do. stdout then points at /dev/null, so
    that the interpreter's last flush of the unsent output cannot fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # stdout without a file descriptor: nothing to flush there
        pass
    return 128 + signal.SIGPIPE
