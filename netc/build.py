"""C source string → loaded library: compile a shared library with the system C compiler, cache it
by a content key, and open it with cffi in ABI mode (`ffi.dlopen`). Takes strings only: it never
sees the IR and never writes C. Why ABI mode, the key, the cache layout and why the cache must be
private to one user: docs/design.md.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import stat
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
_STEM_CHARS = 40  # a longer or non-ASCII library name is cut to a prefix plus a hash in file names
_CACHE_HINT = "set NETC_CACHE to a writable directory"
_log = logging.getLogger(__name__)  # "netc.build": INFO before a compile, WARNING when bypassing


class _Foreign(Exception):
    """Something in the cache that another user owns or may write: nothing there is trusted."""


@dataclass(frozen=True)
class Library:
    """One loaded build: call `lib.<function>`; `warnings` is the compiler's stderr, '' if clean."""

    ffi: cffi.FFI
    lib: object
    path: Path  # the shared library, <cache>/<key[:2]>/<key>/<stem>.so (stem: see _file_stem)
    source_path: Path  # the C source it was compiled from, next to it
    key: str  # sha256 of everything that determines the .so
    cached: bool  # True when found in the cache: no compiler call
    seconds: float  # wall time of this build() call: compiling, or finding and loading
    warnings: str


def build(source: str, cdef: str, *, name: str = "net", flags: Sequence[str] | None = None,
          cache_dir: Path | None = None) -> Library:
    """Compile `source` (or reuse the cached build) and dlopen it with the declarations `cdef`.
    A cache that another user could write is not used: the build goes to a private temporary
    directory instead, with a warning (docs/design.md, "Whose cache")."""
    start = time.perf_counter()
    if not name.isidentifier():
        raise ValueError(f"library name must be an identifier, not {name!r}")
    ffi = cffi.FFI()
    try:  # before compiling: a bad cdef should not cost a compile
        ffi.cdef(cdef)
    except (cffi.CDefError, cffi.FFIError) as e:
        raise BuildError(f"the C declarations (cdef) do not parse: {e}") from None
    cc = find_compiler()
    root = cache_root(cache_dir)
    try:
        entry, manifest, cached = _cached_build(source, cdef, name, cc, flags, _open_root(root),
                                                "first run; cached afterwards")
    except _Foreign as e:
        _log.warning(f"warning: not using the build cache {root}: {e}; compiling in a private "
                     f"temporary directory (docs/design.md, \"Whose cache\")")
        try:
            entry, manifest, cached = _cached_build(source, cdef, name, cc, flags,
                                                    _scratch_root(), "not cached")
        except (_Foreign, OSError) as e:
            raise BuildError(f"no private directory to compile in: {e}",
                             hint="set TMPDIR to a directory only you can write") from None
    stem = _file_stem(name)
    so = entry / f"{stem}.so"
    try:  # NODELETE: unloading a library unloads libgomp under its live threads: a segfault
        lib = ffi.dlopen(str(so), ffi.RTLD_NOW | ffi.RTLD_NODELETE)
    except OSError as e:
        raise BuildError(f"cannot load {so}: {e}") from None
    seconds = time.perf_counter() - start
    _debug(f"{'cache hit, loaded' if cached else 'built'} {so} in {seconds:.3f} s")
    return Library(ffi, lib, so, entry / f"{stem}.c", entry.name, cached, seconds,
                   manifest["warnings"])


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


# ---- the cache: <root>/<key[:2]>/<key>/{<stem>.c, <stem>.so, manifest.json}, and who owns it

def _cached_build(source: str, cdef: str, name: str, cc: list[str],
                  flags: Sequence[str] | None, root: Path, why: str) -> tuple[Path, dict, bool]:
    """(entry, manifest, cached): the entry for these inputs in `root`, compiled if missing or
    broken. Raises _Foreign when anything on the way is not the current user's alone."""
    from . import __version__  # here, not at the top: netc/__init__ may import this module

    identity = _identity(tuple(cc))
    all_flags = [*BASE_FLAGS, *_openmp_flags(cc, identity, root), *choose_flags(flags)]
    key = _sha(json.dumps(dict(
        source=source, cdef=cdef, name=name, compiler=identity, flags=all_flags,
        netc=__version__, cffi=cffi.__version__, host=_host()), sort_keys=True).encode())
    entry = root / key[:2] / key
    stem = _file_stem(name)
    manifest = _check_entry(entry, key, stem, source)
    if manifest is not None:
        return entry, manifest, True
    _log.info(f"compiling {name} ({why})")
    return entry, _compile(cc, all_flags, source, stem, key, root, entry), False


def _open_root(root: Path) -> Path:
    """The cache root, resolved, created 0700 where missing. Raises _Foreign when another user
    could change what is in it: it is not ours, or others may write it or a directory above it."""
    try:
        missing = []
        for path in (root, *root.parents):
            if os.path.lexists(path):
                break
            missing.append(path)
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process was first
                os.mkdir(path, 0o700)
        real = Path(os.path.realpath(root))
        if not _is(real, stat.S_IFDIR):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(real))
    except OSError as e:
        raise BuildError(f"cannot write the build cache {root}: {e}", hint=_CACHE_HINT) from None
    for parent in real.parents:
        st = os.lstat(parent)
        # Whoever owns a directory above can rename the cache away and put another in its place;
        # root may (it can do anything anyway), and so may others in a sticky one like /tmp.
        if st.st_uid not in (0, os.geteuid()):
            raise _Foreign(f"{parent} is owned by uid {st.st_uid}")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise _Foreign(f"{parent} is writable by other users (mode {st.st_mode & 0o7777:o})")
    return real


@functools.lru_cache(maxsize=None)
def _scratch_root() -> Path:
    """This process's private cache, for when the real one is not safe; removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="netc-build-"))
    atexit.register(shutil.rmtree, path, True)
    return _open_root(path)


def _file_stem(name: str) -> str:
    """The library's file name, less the extension: the name itself when it is short plain ASCII,
    else a sanitised prefix and a hash of the name, so that no name can make a file name too long
    or odd. The entry's directory is keyed by the name already; the hash keeps stems distinct."""
    if re.fullmatch(rf"[A-Za-z_][A-Za-z0-9_]{{0,{_STEM_CHARS - 1}}}", name):
        return name
    prefix = re.sub(r"[^A-Za-z0-9_]", "_", name[:_STEM_CHARS - 13])
    return f"{prefix}-{_sha(name.encode())[:12]}"


def _check_entry(entry: Path, key: str, stem: str, source: str) -> dict | None:
    """The manifest of a complete, intact entry, else None. A missing file, a foreign manifest or a
    .so whose size or sha256 differs never reaches dlopen (garbage there can crash the process).
    Raises _Foreign for an entry that is not the current user's alone."""
    if not (_is(entry.parent, stat.S_IFDIR) and _is(entry, stat.S_IFDIR)):
        return None
    try:
        manifest = json.loads(_read(entry / "manifest.json") or b"null")
        so = _read(entry / f"{stem}.so")
        c_text = _read(entry / f"{stem}.c")
    except (OSError, ValueError):
        return None
    intact = (isinstance(manifest, dict) and manifest.get("key") == key and so is not None
              and manifest.get("so_size") == len(so) and manifest.get("so_sha256") == _sha(so)
              and isinstance(manifest.get("warnings"), str) and c_text == source.encode())
    return manifest if intact else None


def _compile(cc: list[str], flags: list[str], source: str, stem: str, key: str, root: Path,
             entry: Path) -> dict:
    """Build into a private temp dir inside the cache, then rename it into place as a whole, so
    that a reader sees either no entry or a complete one, and concurrent builders all succeed.
    Whatever fails on the way (a full disk too), the temp dir goes and the error is a BuildError."""
    try:
        _own_dir(root / "tmp")
        tmp = Path(tempfile.mkdtemp(dir=root / "tmp", prefix=key[:16] + "-"))
    except OSError as e:
        raise BuildError(f"cannot write the build cache {root}: {e}", hint=_CACHE_HINT) from None
    try:
        _write(tmp / f"{stem}.c", source.encode())
        # Relative names in cwd=tmp: the compiler's messages say net.c:12:3, not a temp path.
        cmd = [*cc, *flags, "-o", f"{stem}.so", f"{stem}.c", "-lm"]
        parts = _parts(source)
        part_cmds = []
        if parts > 1:  # one unit per NETC_PART, compiled at once, then linked (docs/design.md)
            objects = [f"{stem}.part{i}.o" for i in range(1, parts + 1)]
            compile_flags = [f for f in flags if f != "-shared"]
            part_cmds = [[*cc, *compile_flags, f"-DNETC_PART={i}", "-c", "-o", obj, f"{stem}.c"]
                         for i, obj in enumerate(objects, 1)]
            cmd = [*cc, *flags, "-o", f"{stem}.so", *objects, "-lm"]
        start = time.perf_counter()
        warnings = ""
        for step in [part_cmds, [cmd]] if part_cmds else [[cmd]]:
            for c in step:
                _debug(f"cd {tmp} && {shlex.join(c)}")
            runs = _run_all(step, tmp)
            warnings += "".join(run.stderr for run in runs)
            failed = [run for run in runs if run.returncode != 0]
            if failed:
                kept = root / "failed" / key / f"{stem}.c"  # where the error message points
                _own_dir(kept.parent.parent)
                _own_dir(kept.parent)
                _atomic_write(kept, source)
                raise _compiler_failed(failed[0], kept)
        seconds = time.perf_counter() - start
        _debug(f"compiler ran {seconds:.3f} s")
        for obj in tmp.glob("*.o"):
            obj.unlink()
        for path in tmp.iterdir():  # the compiler's output follows the umask; ours is 0600
            os.chmod(path, 0o600)
        so = _read(tmp / f"{stem}.so")
        if so is None:
            raise BuildError(f"the C compiler wrote no {stem}.so (command: {shlex.join(cmd)})")
        manifest = dict(key=key, so_sha256=_sha(so), so_size=len(so), command=cmd,
                        warnings=warnings, seconds=round(seconds, 3))
        if part_cmds:
            manifest["part_commands"] = part_cmds
        _write(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
        for path in (*tmp.iterdir(), tmp):  # on disk before the rename publishes them
            _fsync(path)
        return _install(tmp, entry, key, stem, source, root) or manifest
    except OSError as e:
        raise BuildError(f"cannot write the build cache {root}: {e}", hint=_CACHE_HINT) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place


def _parts(source: str) -> int:
    """How many units the source asks to be compiled as: a line `#define NETC_PARTS n` (n >= 2)
    means compile it n times, with -DNETC_PART=1 ... n, and link the objects; else 1."""
    found = re.search(r"^#define NETC_PARTS ([0-9]+)\b", source, re.M)
    return int(found[1]) if found and 2 <= int(found[1]) <= 16 else 1


def _run_all(cmds: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the commands at the same time (the units of one library), each to completion."""
    procs = []
    try:
        for c in cmds:
            procs.append(subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, errors="replace"))
    except OSError as e:
        for proc in procs:
            proc.kill()
            proc.communicate()
        raise BuildError(f"the C compiler {c[0]} does not run: {e}", hint=INSTALL_HINT) from None
    runs = []
    for c, proc in zip(cmds, procs):
        stdout, stderr = proc.communicate()
        runs.append(subprocess.CompletedProcess(c, proc.returncode, stdout, stderr))
    return runs


def _install(tmp: Path, entry: Path, key: str, stem: str, source: str,
             root: Path) -> dict | None:
    """Rename tmp into place; if an intact entry appeared meanwhile, keep it and return its
    manifest. Under a lock so that an intact entry is never swept aside: one process at a time
    decides "what is there is broken" and replaces it. Readers never take the lock."""
    lock = os.open(root / "tmp" / "install.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    broken = None
    try:
        _trust(root / "tmp" / "install.lock", os.fstat(lock))
        fcntl.flock(lock, fcntl.LOCK_EX)
        theirs = _check_entry(entry, key, stem, source)
        if theirs is not None:
            _debug(f"another process built {entry} meanwhile; using it")
            return theirs
        _own_dir(entry.parent)
        if os.path.lexists(entry):  # ours but broken (checked): no reader loads it, so it can go
            _debug(f"replacing broken cache entry {entry}")
            # Moved aside whole, file or directory: readers see the old entry or none, never half.
            broken = Path(tempfile.mkdtemp(dir=root / "tmp", prefix=key[:16] + "-broken-"))
            os.replace(entry, broken / key)
        os.replace(tmp, entry)
        _fsync(entry.parent)
        return None
    finally:
        os.close(lock)
        if broken is not None:
            shutil.rmtree(broken, ignore_errors=True)


def _own_dir(path: Path) -> None:
    """Make `path` a directory of ours, 0700 when created. A file or link of ours in its place is
    a broken cache and is replaced; anything another user owns or may write raises _Foreign."""
    if _is(path, stat.S_IFDIR):
        return
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):  # another process was first
        os.unlink(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    if not _is(path, stat.S_IFDIR):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))


def _is(path: Path, kind: int) -> bool:
    """Is `path` there as `kind` (stat.S_IFDIR, S_IFREG; links are not followed)? Raises _Foreign
    when another user owns it or may write it."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    _trust(path, st)
    return stat.S_IFMT(st.st_mode) == kind


def _trust(path: Path, st: os.stat_result) -> None:
    """Raise _Foreign unless `path` (its lstat or fstat) is the current user's and only theirs."""
    if st.st_uid != os.geteuid():
        raise _Foreign(f"{path} is owned by uid {st.st_uid}, not {os.geteuid()}")
    if st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode):  # a link's own mode means nothing
        raise _Foreign(f"{path} is writable by other users (mode {st.st_mode & 0o7777:o})")


def _read(path: Path) -> bytes | None:
    """The bytes of a regular file of ours; None if it is missing, a link or not a regular file.
    Checked on the open descriptor, so what is read is what was checked."""
    try:  # NONBLOCK: a FIFO planted here must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        _trust(path, st)
        return f.read() if stat.S_ISREG(st.st_mode) else None


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
    if _is(record.parent, stat.S_IFDIR):
        try:
            flags = json.loads(_read(record) or b"null")["flags"]
            if flags in ([], ["-fopenmp"]):  # anything else is a damaged record: probe again
                return flags
        except (OSError, ValueError, KeyError, TypeError):
            pass
    flags = ["-fopenmp"] if _runs(cc, ["-fopenmp"], _OPENMP_PROBE) else []
    _debug(f"OpenMP probe for {identity}: {flags or 'not available'}")
    try:
        _own_dir(record.parent)
        _atomic_write(record, json.dumps({"flags": flags}))
    except OSError:
        pass  # an unwritable cache is reported by _compile, when it matters
    return flags


def _runs(cc: list[str], flags: list[str], program: str) -> bool:
    """Does `program` compile, link and run with these flags?"""
    try:
        with tempfile.TemporaryDirectory(prefix="netc-probe-") as tmp:
            Path(tmp, "probe.c").write_text(program)
            built = subprocess.run([*cc, *flags, "probe.c", "-o", "probe"], cwd=tmp,
                                   capture_output=True).returncode == 0
            return built and subprocess.run([os.path.join(tmp, "probe")], cwd=tmp,
                                            capture_output=True).returncode == 0
    except OSError:  # no compiler, or no room for the probe: the answer is no
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
    """Replace `path` through a temp file and a rename; the temp file never outlives a failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        try:
            _write_all(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write(path: Path, data: bytes) -> None:
    """A new file, 0600 whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _debug(message: str) -> None:
    if "build" in os.environ.get("NETC_DEBUG", "").split(","):
        print(f"netc build: {message}", file=sys.stderr)
