"""The `netc` command: one `cmd_<name>(args) -> int` and one parser block per subcommand.

    netc report examples/lenet5.net -D s=2 --batch 64   ->  the report table on stdout, exit 0

main() is the single error boundary: a NetcError prints its format() (file:line:col, the line, a
caret) and exits with its exit_code (2 for a bad spec); an unreadable file prints one line and
exits 2; argparse's own errors exit 2. No traceback for anything the user can fix.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

from . import __version__, report
from .errors import NetcError
from .lower import load_spec
from .passes import analyze
from .passes.receptive import rf_from

MAX_COMBINATIONS = 256  # a comparison table longer than this is a typo, not a study


# ---- shared by every subcommand that reads a spec

def define(text: str) -> tuple[str, tuple[float, ...]]:
    """argparse type of -D: `name=value` or `name=a..b`, an integer range with both ends."""
    name, sep, value = (part.strip() for part in text.partition("="))
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    lo, dots, hi = value.partition("..")
    try:
        values = range(int(lo), int(hi) + 1) if dots else (_number(value),)
    except ValueError:
        form = "a range of integers, as in N=1..3" if dots else "a number"
        raise argparse.ArgumentTypeError(f"{name}: expected {form}, got {value!r}") from None
    if not 1 <= len(values) <= MAX_COMBINATIONS:
        raise argparse.ArgumentTypeError(
            f"{name}: a range holds 1 to {MAX_COMBINATIONS} values, smaller end first")
    return name, tuple(values)


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


def _number(text: str) -> float:
    """An integer stays one (a count); anything else must be a finite float."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text) from None
        return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_defines(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-D", dest="defines", metavar="NAME=VALUE", type=define, action="append",
                        default=[], help="set a parameter of the spec; a..b is an integer range")


# ---- netc report

def cmd_report(args: argparse.Namespace) -> int:
    combos = bindings(args.defines)
    if len(combos) > 1 and args.rf_from:
        raise NetcError("--rf-from reports one network, but -D gives a range")
    reports, warnings = [], {}  # warnings: an ordered set over the combinations
    for overrides in combos:
        net = load_spec(Path(args.file), overrides)
        analysis = analyze(net)
        d = report.data(net, analysis, args.batch)
        if args.rf_from:
            if args.rf_from not in {layer.label for layer in net.layers}:
                raise NetcError(f"--rf-from: no layer is labelled {args.rf_from!r}; the labels are "
                                f"{', '.join(layer.label for layer in net.layers)}")
            d["rf_from"] = report.reach_data(net, rf_from(net, analysis.shapes, args.rf_from))
        reports.append(d)
        warnings.update((w.format(), None) for w in analysis.shapes.warnings)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if len(reports) > 1:
        out = ({"schema_version": report.SCHEMA_VERSION, "comparison": reports} if args.json
               else report.render_comparison(reports))
    elif args.json:
        out = reports[0]
    else:
        out = report.render_reach(reports[0]) if args.rf_from else report.render(reports[0])
    sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n" if args.json else out)
    return 0


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
    _add_defines(p)
    p.add_argument("--json", action="store_true", help="print JSON (schema in docs/report.md)")
    p.add_argument("--rf-from", metavar="LAYER",
                   help="the receptive field of one element of LAYER's output in every earlier "
                        "layer's input")
    p.add_argument("--batch", type=_positive, default=32, metavar="N",
                   help="batch size for the training memory (default 32)")
    p.set_defaults(run=cmd_report)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its message (or --help)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except NetcError as e:
        print(e.format(), file=sys.stderr)
        return e.exit_code
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
