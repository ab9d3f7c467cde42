"""C source string → loaded library: compile a shared library with the system C compiler, cache it
by a content key, and open it with cffi in ABI mode (`ffi.dlopen`). Takes strings only: it never
sees the IR and never writes C. Why ABI mode, the key and the cache layout: docs/design.md.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cffi

from .errors import BuildError

DEFAULT_FLAGS = ("-O3", "-march=native")  # replaced by the `flags` argument or $NETC_CFLAGS
BASE_FLAGS = ("-fPIC", "-shared", "-Wall", "-Wextra")  # always: a loadable library, warnings shown
INSTALL_HINT = ("install one: apt-get install gcc  (Fedora: dnf install gcc; "
                "macOS: xcode-select --install)")
_OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
_SHOWN_LINES = 40  # of a failing compiler's stderr; the full text stays on BuildError.stderr


@dataclass(frozen=True)
class Library:
    """One loaded build: call `lib.<function>`; `warnings` is the compiler's stderr, '' if clean."""

    ffi: cffi.FFI
    lib: object
    path: Path  # the shared library, <cache>/<key[:2]>/<key>/<name>.so
    source_path: Path  # the C source it was compiled from, next to it
    key: str  # sha256 of everything that determines the .so
    cached: bool  # True when found in the cache: no compiler call
    seconds: float  # wall time of this build() call: compiling, or finding and loading
    warnings: str


def build(source: str, cdef: str, *, name: str = "net", flags: Sequence[str] | None = None,
          cache_dir: Path | None = None) -> Library:
    """Compile `source` (or reuse the cached build) and dlopen it with the declarations `cdef`."""
    from . import __version__  # here, not at the top: netc/__init__ may import this module

    start = time.perf_counter()
    if not name.isidentifier():
        raise ValueError(f"library name must be an identifier, not {name!r}")
    ffi = cffi.FFI()
    try:  # before compiling: a bad cdef should not cost a compile
        ffi.cdef(cdef)
    except (cffi.CDefError, cffi.FFIError) as e:
        raise BuildError(f"the C declarations (cdef) do not parse: {e}") from None
    root = cache_root(cache_dir)
    cc = find_compiler()
    identity = _identity(tuple(cc))
    all_flags = [*BASE_FLAGS, *_openmp_flags(cc, identity, root), *choose_flags(flags)]
    key = _sha(json.dumps(dict(
        source=source, cdef=cdef, name=name, compiler=identity, flags=all_flags,
        netc=__version__, cffi=cffi.__version__, host=_host()), sort_keys=True).encode())
    entry = root / key[:2] / key
    manifest = _check_entry(entry, key, name, source)
    cached = manifest is not None
    if not cached:
        manifest = _compile(cc, all_flags, source, name, key, root, entry)
    so = entry / f"{name}.so"
    try:  # NODELETE: unloading a library unloads libgomp under its live threads: a segfault
        lib = ffi.dlopen(str(so), ffi.RTLD_NOW | ffi.RTLD_NODELETE)
    except OSError as e:
        raise BuildError(f"cannot load {so}: {e}") from None
    seconds = time.perf_counter() - start
    _debug(f"{'cache hit, loaded' if cached else 'built'} {so} in {seconds:.3f} s")
    return Library(ffi, lib, so, entry / f"{name}.c", key, cached, seconds, manifest["warnings"])


def cache_root(cache_dir: Path | None = None) -> Path:
    """The argument, else $NETC_CACHE, else $XDG_CACHE_HOME/netc, else ~/.cache/netc."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_dir or os.environ.get("NETC_CACHE") or Path(xdg) / "netc")


def choose_flags(flags: Sequence[str] | None = None) -> list[str]:
    """The optimisation flags: the `flags` argument, else $NETC_CFLAGS, else -O3 -march=native."""
    if flags is not None:
        return list(flags)
    env = os.environ.get("NETC_CFLAGS", "").strip()
    return shlex.split(env) if env else list(DEFAULT_FLAGS)


def find_compiler() -> list[str]:
    """The compiler command: $CC (it may carry words, e.g. 'ccache gcc'), else cc, else gcc."""
    cc = os.environ.get("CC", "").strip()
    words = shlex.split(cc)
    # An explicit $CC is respected, never silently replaced by another compiler.
    for candidate in [words[0]] if words else ["cc", "gcc"]:
        path = shutil.which(candidate)
        if path:
            return [path, *words[1:]]
    looked = f"$CC={cc}" if words else "$CC, cc, gcc"
    raise BuildError(f"no C compiler found (looked for {looked})", hint=INSTALL_HINT)


def build_executable(source: str, out: Path, flags: Sequence[str]) -> Path:
    """Compile a standalone program (e.g. a sanitizer harness), uncached; its C goes to out.c."""
    out = Path(out)
    c_path = out.with_name(out.stem + ".c")
    c_path.write_text(source)
    cmd = [*find_compiler(), "-Wall", "-Wextra", *flags, "-o", str(out), str(c_path), "-lm"]
    _debug(shlex.join(cmd))
    run = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if run.returncode != 0:
        raise _compiler_failed(run, c_path)
    return out


@functools.lru_cache(maxsize=None)
def sanitizers_available() -> bool:
    """Can this machine build and run a program with -fsanitize=address,undefined? Probed once."""
    try:
        cc = find_compiler()
    except BuildError:
        return False
    return _runs(cc, ["-fsanitize=address,undefined"], "int main(void) { return 0; }\n")


# ---- the cache entry: <root>/<key[:2]>/<key>/{<name>.c, <name>.so, manifest.json}

def _check_entry(entry: Path, key: str, name: str, source: str) -> dict | None:
    """The manifest of a complete, intact entry, else None. A missing file, a foreign manifest or a
    .so whose size or sha256 differs never reaches dlopen (garbage there can crash the process)."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        so = (entry / f"{name}.so").read_bytes()
        c_text = (entry / f"{name}.c").read_bytes()
    except (OSError, ValueError):
        return None
    intact = (isinstance(manifest, dict) and manifest.get("key") == key
              and manifest.get("so_size") == len(so) and manifest.get("so_sha256") == _sha(so)
              and isinstance(manifest.get("warnings"), str) and c_text == source.encode())
    return manifest if intact else None


def _compile(cc: list[str], flags: list[str], source: str, name: str, key: str, root: Path,
             entry: Path) -> dict:
    """Build into a private temp dir inside the cache, then rename it into place as a whole, so
    that a reader sees either no entry or a complete one, and concurrent builders all succeed."""
    try:
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root / "tmp", prefix=key[:16] + "-"))
    except OSError as e:
        raise BuildError(f"cannot write the build cache {root}: {e}",
                         hint="set NETC_CACHE to a writable directory") from None
    try:
        (tmp / f"{name}.c").write_text(source)
        # Relative names in cwd=tmp: the compiler's messages say net.c:12:3, not a temp path.
        cmd = [*cc, *flags, "-o", f"{name}.so", f"{name}.c", "-lm"]
        parts = _parts(source)
        part_cmds = []
        if parts > 1:  # one unit per NETC_PART, compiled at once, then linked (docs/design.md)
            objects = [f"{name}.part{i}.o" for i in range(1, parts + 1)]
            compile_flags = [f for f in flags if f != "-shared"]
            part_cmds = [[*cc, *compile_flags, f"-DNETC_PART={i}", "-c", "-o", obj, f"{name}.c"]
                         for i, obj in enumerate(objects, 1)]
            cmd = [*cc, *flags, "-o", f"{name}.so", *objects, "-lm"]
        start = time.perf_counter()
        warnings = ""
        for step in [part_cmds, [cmd]] if part_cmds else [[cmd]]:
            for c in step:
                _debug(f"cd {tmp} && {shlex.join(c)}")
            runs = _run_all(step, tmp)
            warnings += "".join(run.stderr for run in runs)
            failed = [run for run in runs if run.returncode != 0]
            if failed:
                kept = root / "failed" / key / f"{name}.c"  # where the error message points
                _atomic_write(kept, source)
                raise _compiler_failed(failed[0], kept)
        seconds = time.perf_counter() - start
        _debug(f"compiler ran {seconds:.3f} s")
        for obj in tmp.glob("*.o"):
            obj.unlink()
        so = (tmp / f"{name}.so").read_bytes()
        manifest = dict(key=key, so_sha256=_sha(so), so_size=len(so), command=cmd,
                        warnings=warnings, seconds=round(seconds, 3))
        if part_cmds:
            manifest["part_commands"] = part_cmds
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for path in (*tmp.iterdir(), tmp):  # on disk before the rename publishes them
            _fsync(path)
        return _install(tmp, entry, key, name, source, root) or manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place


def _parts(source: str) -> int:
    """How many units the source asks to be compiled as: a line `#define NETC_PARTS n` (n >= 2)
    means compile it n times, with -DNETC_PART=1 ... n, and link the objects; else 1."""
    found = re.search(r"^#define NETC_PARTS ([0-9]+)\b", source, re.M)
    return int(found[1]) if found and 2 <= int(found[1]) <= 16 else 1


def _run_all(cmds: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the commands at the same time (the units of one library), each to completion."""
    procs = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, errors="replace") for c in cmds]
    runs = []
    for c, proc in zip(cmds, procs):
        stdout, stderr = proc.communicate()
        runs.append(subprocess.CompletedProcess(c, proc.returncode, stdout, stderr))
    return runs


def _install(tmp: Path, entry: Path, key: str, name: str, source: str,
             root: Path) -> dict | None:
    """Rename tmp into place; if an intact entry appeared meanwhile, keep it and return its
    manifest. Under a lock so that an intact entry is never swept aside: one process at a time
    decides "what is there is corrupt" and replaces it. Readers never take the lock."""
    with open(root / "tmp" / "install.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        theirs = _check_entry(entry, key, name, source)
        if theirs is not None:
            _debug(f"another process built {entry} meanwhile; using it")
            return theirs
        if entry.exists():  # corrupt: no reader loads it, so it can go
            _debug(f"replacing corrupt cache entry {entry}")
            shutil.rmtree(entry)
        entry.parent.mkdir(exist_ok=True)
        os.replace(tmp, entry)
        _fsync(entry.parent)
        return None


def _compiler_failed(run: subprocess.CompletedProcess, c_path: Path) -> BuildError:
    lines = run.stderr.strip().splitlines()
    if len(lines) > _SHOWN_LINES:
        lines = lines[:_SHOWN_LINES] + [f"... ({len(lines) - _SHOWN_LINES} more lines)"]
    err = BuildError(f"C compiler failed (exit {run.returncode}) on {c_path}:\n" + "\n".join(lines),
                     hint="flags from the `flags` argument or NETC_CFLAGS can cause this; "
                          "otherwise it is a bug in netc's generated C")
    err.stderr, err.source_path = run.stderr, c_path
    return err


# ---- what the key and the flags depend on

@functools.lru_cache(maxsize=None)
def _identity(cc: tuple[str, ...]) -> str:
    """The compiler's command and the first line of its --version, e.g. '/usr/bin/cc | cc 12.2'."""
    try:
        run = subprocess.run([*cc, "--version"], capture_output=True, text=True, errors="replace")
    except OSError as e:
        raise BuildError(f"the C compiler {shlex.join(cc)} does not run: {e}",
                         hint=INSTALL_HINT) from None
    lines = run.stdout.splitlines()
    return f"{shlex.join(cc)} | {lines[0] if lines else '?'}"


def _openmp_flags(cc: list[str], identity: str, root: Path) -> list[str]:
    """['-fopenmp'] where the compiler builds and runs OpenMP code. The answer is kept per compiler
    in the cache: the probe costs ~0.1 s, too much for a cached load in a fresh process."""
    record = root / "probes" / f"openmp-{_sha(identity.encode())[:16]}.json"
    try:
        flags = json.loads(record.read_text())["flags"]
        if flags in ([], ["-fopenmp"]):  # anything else is a damaged record: probe again
            return flags
    except (OSError, ValueError, KeyError, TypeError):
        pass
    flags = ["-fopenmp"] if _runs(cc, ["-fopenmp"], _OPENMP_PROBE) else []
    _debug(f"OpenMP probe for {identity}: {flags or 'not available'}")
    try:
        _atomic_write(record, json.dumps({"flags": flags}))
    except OSError:
        pass  # an unwritable cache is reported by _compile, when it matters
    return flags


def _runs(cc: list[str], flags: list[str], program: str) -> bool:
    """Does `program` compile, link and run with these flags?"""
    with tempfile.TemporaryDirectory(prefix="netc-probe-") as tmp:
        Path(tmp, "probe.c").write_text(program)
        try:
            built = subprocess.run([*cc, *flags, "probe.c", "-o", "probe"], cwd=tmp,
                                   capture_output=True).returncode == 0
            return built and subprocess.run([os.path.join(tmp, "probe")], cwd=tmp,
                                            capture_output=True).returncode == 0
        except OSError:
            return False


@functools.lru_cache(maxsize=None)
def _host() -> str:
    """The CPU: -march=native builds for it, so a cache shared across machines must not mix."""
    try:
        cpu = re.search(r"^(flags|Features)\s*:.*$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        cpu = None
    cpu_id = cpu[0] if cpu else platform.processor()
    return f"{platform.machine()} {_sha(cpu_id.encode())[:16]}"


# ---- small helpers

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _debug(message: str) -> None:
    if "build" in os.environ.get("NETC_DEBUG", "").split(","):
        print(f"netc build: {message}", file=sys.stderr)
