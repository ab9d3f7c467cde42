"""netc.build's cache against other users (a planted library is never loaded), broken entries,
a full disk and long names; the "compiling" log line."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import netc
from netc.build import build
from netc.errors import BuildError

ADD = "int add(int a, int b) { return a + b; }\n"
ADD_CDEF = "int add(int a, int b);"
OTHER_UID = 12345  # a user that is not us
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")

# Another user's library: loading it runs its constructor, which leaves a marker file.
TROJAN = """#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void trojan(void) {{
    close(open("{marker}", O_CREAT | O_WRONLY, 0600));
}}
int add(int a, int b) {{ (void)a; (void)b; return 42; }}
"""

# Builds ADD in a separate process, so that this one never maps the entry's library.
CHILD = f"""
import json
from netc.build import build
lib = build({ADD!r}, {ADD_CDEF!r})
print(json.dumps(dict(key=lib.key, path=str(lib.path))))
"""

# Builds under a file size limit: every write past it fails, as on a full disk.
FULL_DISK = """
import json, resource, sys
from netc.build import build
from netc.errors import BuildError
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2)
try:
    build(sys.argv[2], "int add(int a, int b);")
except BuildError as e:
    print(json.dumps(dict(message=e.message)))
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "shared" / "cache"
    monkeypatch.setenv("NETC_CACHE", str(root))
    for name in ("CC", "NETC_CFLAGS", "NETC_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return root


def run_child(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Python in a child process, importing the netc under test (not the one in its cwd)."""
    env = {**os.environ, "PYTHONPATH": str(Path(netc.__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def build_elsewhere(cache: Path) -> Path:
    """The entry directory of ADD in `cache`, built by a child process."""
    run = run_child(cache.parents[1], CHILD)
    assert run.returncode == 0, run.stderr
    entry = Path(json.loads(run.stdout)["path"]).parent
    assert entry.is_relative_to(cache.resolve())  # never tamper with a cache outside the test's
    return entry


def plant_trojan(entry: Path, tmp_path: Path) -> tuple[bytes, Path]:
    """Replace the entry's library with the trojan and make the manifest match it, as an attacker
    who can write the entry would. Returns the trojan's bytes and its marker file."""
    marker = tmp_path / "trojan-ran"
    (tmp_path / "trojan.c").write_text(TROJAN.format(marker=marker))
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-shared", "-fPIC", "-o", tmp_path / "trojan.so", tmp_path / "trojan.c"],
                   check=True)
    trojan = (tmp_path / "trojan.so").read_bytes()
    (entry / "net.so").write_bytes(trojan)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest.update(so_size=len(trojan), so_sha256=hashlib.sha256(trojan).hexdigest())
    (entry / "manifest.json").write_text(json.dumps(manifest))
    return trojan, marker


def test_the_planted_library_runs_when_the_cache_trusts_it(cache, tmp_path):
    # The control for the tests below: with nothing hostile about it, a matching manifest is all
    # an entry needs (your own cache is trusted), so the trojan does load.
    entry = build_elsewhere(cache)
    _, marker = plant_trojan(entry, tmp_path)
    assert build(ADD, ADD_CDEF).lib.add(2, 3) == 42 and marker.exists()


def chown(path: Path) -> None:
    os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)


@pytest.mark.parametrize("where, change", [
    ("cache", "0777"), ("cache", "0770"), ("entry", "0757"), ("manifest.json", "0646"),
    ("shared", "0777"),  # the directory above the cache: it can swap the whole cache
    *[pytest.param(where, "uid", marks=as_root)
      for where in ("cache", "shard", "entry", "net.so", "manifest.json")],
])
def test_a_cache_others_can_write_is_bypassed_with_a_warning(cache, tmp_path, caplog, where,
                                                             change):
    entry = build_elsewhere(cache)
    trojan, marker = plant_trojan(entry, tmp_path)
    paths = dict(cache=cache, shared=cache.parent, shard=entry.parent, entry=entry)
    hostile = paths.get(where, entry / where)
    if change == "uid":
        chown(hostile)
    else:
        hostile.chmod(int(change, 8))
    with caplog.at_level(logging.WARNING, logger="netc.build"):
        lib = build(ADD, ADD_CDEF)
    assert lib.lib.add(2, 3) == 5 and not marker.exists()
    assert not lib.path.is_relative_to(cache.resolve())  # built privately, not in the cache
    assert stat.S_IMODE(lib.path.parents[2].stat().st_mode) == 0o700
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in message
    assert message.startswith(f"warning: not using the build cache {cache}: {hostile} is ")
    why = f"owned by uid {OTHER_UID}" if change == "uid" else "writable by other users"
    assert why in message
    assert (entry / "net.so").read_bytes() == trojan  # another user's files are left alone


@as_root
@pytest.mark.parametrize("directory, source", [
    ("tmp", ADD),  # builds are renamed into place from there
    ("probes", ADD),
    ("failed", "int add(int a, int b) { return }\n"),
], ids=["tmp", "probes", "failed"])
def test_a_build_never_writes_into_another_users_directory(cache, caplog, directory, source):
    cache.mkdir(parents=True)
    (cache / directory).mkdir()
    chown(cache / directory)
    with caplog.at_level(logging.WARNING, logger="netc.build"):
        try:
            lib_path = build(source, ADD_CDEF).path
        except BuildError as e:
            lib_path = e.source_path
    assert not lib_path.is_relative_to(cache.resolve())
    assert f"{cache / directory} is owned by uid {OTHER_UID}" in caplog.records[0].getMessage()
    assert not list((cache / directory).iterdir())


@pytest.mark.parametrize("link", ["net.so", "entry"])
def test_a_symlink_in_an_entry_is_not_followed_and_the_entry_is_rebuilt(cache, tmp_path, link):
    entry = build_elsewhere(cache)
    trojan, marker = plant_trojan(entry, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(entry if link == "entry" else entry / link, elsewhere)
    (entry if link == "entry" else entry / link).symlink_to(elsewhere)
    lib = build(ADD, ADD_CDEF)
    assert lib.lib.add(2, 3) == 5 and not marker.exists() and not lib.cached
    assert lib.path.parent == entry.resolve() and not entry.is_symlink()
    assert build(ADD, ADD_CDEF).cached
    assert (elsewhere / "net.so" if link == "entry" else elsewhere).read_bytes() == trojan


def test_cache_directories_are_0700_and_files_0600_whatever_the_umask(cache, tmp_path,
                                                                       monkeypatch):
    sticky = tmp_path / "sticky"  # like /tmp: writable by all, but only owners rename entries
    sticky.mkdir()
    sticky.chmod(0o1777)
    monkeypatch.setenv("NETC_CACHE", str(sticky / "cache"))
    old = os.umask(0)
    try:
        lib = build(ADD, ADD_CDEF)
    finally:
        os.umask(old)
    root = sticky / "cache"
    assert lib.path.is_relative_to(root)
    dirs = [root, root / "tmp", root / "probes", lib.path.parent.parent, lib.path.parent]
    assert [stat.S_IMODE(d.stat().st_mode) for d in dirs] == [0o700] * 5
    files = [*lib.path.parent.iterdir(), *(root / "probes").iterdir()]
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    assert build(ADD, ADD_CDEF).cached  # a cache in a sticky directory is used


def test_a_cold_build_logs_compiling_and_a_cached_one_does_not(cache, caplog):
    with caplog.at_level(logging.INFO, logger="netc.build"):
        build(ADD, ADD_CDEF, name="lenet")
        build(ADD, ADD_CDEF, name="lenet")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "compiling lenet (first run; cached afterwards)")]


@pytest.mark.parametrize("replace", ["entry", "shard"])
def test_an_entry_replaced_by_a_plain_file_is_rebuilt(cache, tmp_path, replace):
    entry = build_elsewhere(cache)
    broken = entry if replace == "entry" else entry.parent
    shutil.rmtree(broken)
    broken.write_text("not a directory")
    lib = build(ADD, ADD_CDEF)
    assert not lib.cached and lib.lib.add(2, 3) == 5 and lib.path.parent == entry
    assert build(ADD, ADD_CDEF).cached
    assert [p.name for p in (cache / "tmp").iterdir()] == ["install.lock"]  # the old one is gone


@pytest.mark.parametrize("limit, source, error", [
    (0, ADD, "cannot write the build cache"),  # nothing fits
    (4000, ADD + "/* padding */\n" * 500, "cannot write the build cache"),  # the source does not
    (2000, ADD, "C compiler failed"),  # the compiler's output does not
], ids=["nothing-fits", "source-does-not-fit", "output-does-not-fit"])
def test_a_full_disk_is_a_build_error_and_leaves_no_temp_files(cache, tmp_path, limit, source,
                                                                error):
    run = run_child(tmp_path, FULL_DISK, str(limit), source)
    assert run.returncode == 0 and run.stdout, run.stderr  # a BuildError, not a traceback
    message = json.loads(run.stdout)["message"]
    assert message.startswith(error)
    if error.startswith("cannot"):
        assert "\n" not in message and "File too large" in message
    left = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert all(p.startswith(("probes/openmp-", "failed/")) or p == "tmp/install.lock"
               for p in left), left
    assert not list(cache.glob("??/*")) and not list((cache / "tmp").glob("*/"))


def test_any_identifier_gives_a_short_safe_file_name(cache):
    long_a, long_b, accented = "n" * 300 + "a", "n" * 300 + "b", "réseau_ü"
    libs = [build(ADD, ADD_CDEF, name=name) for name in (long_a, long_b, accented)]
    assert all(lib.lib.add(2, 3) == 5 for lib in libs)
    names = [lib.path.name for lib in libs]
    assert all(len(n) <= 43 and n.isascii() for n in names) and len(set(names)) == 3
    assert build(ADD, ADD_CDEF, name=long_a).cached
