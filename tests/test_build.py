"""netc.build: compile, load, cache (reuse, concurrency, corruption), flags, errors, helpers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netc.build import build, build_executable, sanitizers_available
from netc.errors import BuildError

REPO = Path(__file__).resolve().parents[1]
ADD = "int add(int a, int b) { return a + b; }\n"
ADD_CDEF = "int add(int a, int b);"

# Builds ADD in a separate process and prints what happened: the cache must work across processes.
CHILD = """
import json, os
from netc.build import build
lib = build({src!r}, {cdef!r})
print(json.dumps(dict(cached=lib.cached, key=lib.key, sum=lib.lib.add(2, 3),
                      inode=os.stat(lib.path).st_ino)))
""".format(src=ADD, cdef=ADD_CDEF)

# A compiler wrapper: logs every call, and with NETC_TEST_BARRIER set holds each compile of net.c
# until NETC_TEST_N of them have arrived, which proves the builds really overlapped.
WRAPPER = """#!/bin/sh
echo "$*" >> "$NETC_TEST_LOG"
case "$*" in *net.c*)
  if [ -n "${{NETC_TEST_BARRIER:-}}" ]; then
    touch "$NETC_TEST_BARRIER/$$"
    i=0
    while [ "$(ls "$NETC_TEST_BARRIER" | wc -l)" -lt "$NETC_TEST_N" ]; do
      i=$((i + 1))
      if [ "$i" -gt 1200 ]; then touch "$NETC_TEST_LOG.gave-up"; break; fi
      sleep 0.05
    done
  fi;;
esac
exec {cc} "$@"
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("NETC_CACHE", str(root))
    for name in ("CC", "NETC_CFLAGS", "NETC_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture
def logging_cc(tmp_path, monkeypatch, cache) -> Path:
    """CC = a wrapper around the real compiler; returns the log of its calls."""
    wrapper = tmp_path / "cc-wrapper"
    wrapper.write_text(WRAPPER.format(cc=shutil.which("cc") or shutil.which("gcc")))
    wrapper.chmod(0o755)
    log = tmp_path / "cc.log"
    monkeypatch.setenv("CC", str(wrapper))
    monkeypatch.setenv("NETC_TEST_LOG", str(log))
    return log


def compiles(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "net.c" in line]


def spawn_child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def child_result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_builds_loads_and_lays_out_the_entry(cache):
    lib = build(ADD, ADD_CDEF)
    assert lib.lib.add(2, 3) == 5
    assert not lib.cached and lib.warnings == "" and lib.seconds > 0
    assert lib.path == cache / lib.key[:2] / lib.key / "net.so"
    assert lib.source_path == lib.path.with_name("net.c")
    assert lib.source_path.read_text() == ADD
    manifest = json.loads((lib.path.parent / "manifest.json").read_text())
    assert manifest["so_size"] == lib.path.stat().st_size
    assert len(manifest["so_sha256"]) == 64
    assert [p.name for p in (cache / "tmp").iterdir()] == ["install.lock"]  # no leftovers


def test_cache_hit_never_calls_the_compiler_in_this_or_another_process(logging_cc):
    first = build(ADD, ADD_CDEF)
    assert not first.cached and len(compiles(logging_cc)) == 1
    again = build(ADD, ADD_CDEF)
    assert again.cached and again.key == first.key and again.lib.add(1, 1) == 2
    other = child_result(spawn_child())
    assert (other["cached"], other["key"], other["sum"]) == (True, first.key, 5)
    assert len(compiles(logging_cc)) == 1


def test_key_follows_source_flags_and_name(cache):
    base = build(ADD, ADD_CDEF, flags=["-O1"]).key
    assert build(ADD, ADD_CDEF, flags=["-O1"]).key == base
    assert build(ADD + "/* changed */\n", ADD_CDEF, flags=["-O1"]).key != base
    assert build(ADD, ADD_CDEF, flags=["-O2"]).key != base
    assert build(ADD, ADD_CDEF, flags=["-O1"], name="other").key != base


def test_concurrent_builds_of_the_same_source_all_succeed(logging_cc, tmp_path, monkeypatch):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    monkeypatch.setenv("NETC_TEST_BARRIER", str(barrier))
    monkeypatch.setenv("NETC_TEST_N", "3")
    results = [child_result(proc) for proc in [spawn_child() for _ in range(3)]]
    assert not Path(f"{logging_cc}.gave-up").exists(), "the three compiles never overlapped"
    assert len(compiles(logging_cc)) == 3
    assert all(r["sum"] == 5 and r["key"] == results[0]["key"] for r in results)
    key = results[0]["key"]
    entry = logging_cc.parent / "cache" / key[:2] / key
    assert [p.name for p in entry.parent.iterdir()] == [key]
    # The first entry published stays: the later builders used it rather than replacing it.
    assert {r["inode"] for r in results} == {(entry / "net.so").stat().st_ino}
    monkeypatch.delenv("NETC_TEST_BARRIER")
    assert build(ADD, ADD_CDEF).cached  # the winner's entry is intact


@pytest.mark.parametrize("damage", [
    "truncate-so", "garbage-so", "delete-so", "delete-c", "garbage-manifest", "wrong-sha"])
def test_corrupt_entry_is_detected_and_rebuilt(cache, damage):
    key = child_result(spawn_child())["key"]  # built elsewhere: this process never mapped it
    entry = cache / key[:2] / key
    so, manifest = entry / "net.so", entry / "manifest.json"
    match damage:
        case "truncate-so":
            so.write_bytes(so.read_bytes()[:100])
        case "garbage-so":
            so.write_bytes(b"\x7fELF" + b"\xff" * (so.stat().st_size - 4))
        case "delete-so":
            so.unlink()
        case "delete-c":
            (entry / "net.c").unlink()
        case "garbage-manifest":
            manifest.write_text("{not json")
        case "wrong-sha":
            manifest.write_text(json.dumps({**json.loads(manifest.read_text()),
                                            "so_sha256": "0" * 64}))
    lib = build(ADD, ADD_CDEF)
    assert not lib.cached and lib.key == key and lib.lib.add(2, 3) == 5
    assert build(ADD, ADD_CDEF).cached


@pytest.mark.parametrize("cc, path, looked", [
    ("/nonexistent", None, "$CC=/nonexistent"), (None, "empty", "$CC, cc, gcc")])
def test_missing_compiler_names_what_to_install(cache, tmp_path, monkeypatch, cc, path, looked):
    if cc:
        monkeypatch.setenv("CC", cc)
    if path:
        (tmp_path / path).mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / path))
    with pytest.raises(BuildError) as info:
        build(ADD, ADD_CDEF)
    message = str(info.value)
    assert f"no C compiler found (looked for {looked})" in message
    assert "apt-get install gcc" in message and "xcode-select --install" in message


def test_compile_error_carries_stderr_and_the_source_path(cache):
    broken = "int add(int a, int b) { return a + b }\n"
    with pytest.raises(BuildError) as info:
        build(broken, ADD_CDEF)
    err = info.value
    assert "net.c:1:" in err.stderr and "error" in err.stderr
    assert err.source_path.read_text() == broken
    assert str(err.source_path) in str(err) and "expected" in str(err)
    assert not list(cache.glob("??/*"))  # nothing half-built was published


def test_netc_cflags_is_used_and_the_flags_argument_wins(cache, monkeypatch):
    src, cdef = "int value(void) { return VALUE; }\n", "int value(void);"
    monkeypatch.setenv("NETC_CFLAGS", "-O1 -DVALUE=7")
    from_env = build(src, cdef)
    assert from_env.lib.value() == 7
    from_arg = build(src, cdef, flags=["-O1", "-DVALUE=9"])
    assert from_arg.lib.value() == 9 and from_arg.key != from_env.key
    monkeypatch.delenv("NETC_CFLAGS")
    default = build("int value(void) { return 1; }\n", cdef)
    command = json.loads((default.path.parent / "manifest.json").read_text())["command"]
    assert {"-O3", "-march=native", "-Wall", "-Wextra", "-fPIC", "-shared"} <= set(command)


SPLIT = """#define NETC_PARTS 2
int twice(int x);
#if NETC_PART == 1 || !defined(NETC_PART)
int twice(int x) { return 2 * x; }
#endif
#if NETC_PART != 1
int part(int unused) { return twice(NETC_PART + 0); }
#endif
"""


def test_a_source_with_netc_parts_compiles_as_units_and_links(cache):
    lib = build(SPLIT, "int part(int);")
    assert lib.lib.part(0) == 4  # part 2 calls part 1's function
    manifest = json.loads((lib.path.parent / "manifest.json").read_text())
    assert [c[-4:] for c in manifest["part_commands"]] == [
        ["-c", "-o", "net.part1.o", "net.c"], ["-c", "-o", "net.part2.o", "net.c"]]
    assert "-DNETC_PART=2" in manifest["part_commands"][1]
    assert manifest["command"][-4:] == ["net.so", "net.part1.o", "net.part2.o", "-lm"]
    assert "unused parameter" in lib.warnings  # a unit's stderr is kept
    assert sorted(p.name for p in lib.path.parent.iterdir()) == ["manifest.json", "net.c",
                                                                 "net.so"]
    assert build(SPLIT, "int part(int);").cached


def test_warnings_are_captured_and_survive_the_cache(cache):
    src = "int f(int unused) { return 0; }\n"
    lib = build(src, "int f(int);")
    assert "unused parameter" in lib.warnings and "net.c:1:" in lib.warnings
    assert build(src, "int f(int);").warnings == lib.warnings


OPENMP = """#include <omp.h>
int threads(void) {
    int n = 0;
    #pragma omp parallel
    {
        #pragma omp atomic
        n++;
    }
    return n == omp_get_max_threads();
}
"""

# Drops an OpenMP library while libgomp's worker threads live on: they must keep their code.
DROP_OPENMP = f"""
import gc
from netc.build import build
lib = build({OPENMP!r}, "int threads(void);")
assert lib.lib.threads() == 1
del lib
gc.collect()
print(sum(range(10 ** 6)) and "survived")
"""


def test_openmp_code_builds_clean_and_survives_being_dropped(cache):
    probe = build("", "")  # records whether the compiler has OpenMP
    if "-fopenmp" not in json.loads((probe.path.parent / "manifest.json").read_text())["command"]:
        pytest.skip("this compiler has no OpenMP")
    omp = build(OPENMP, "int threads(void);")
    assert omp.warnings == "" and omp.lib.threads() == 1
    run = subprocess.run([sys.executable, "-c", DROP_OPENMP], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert (run.returncode, run.stdout) == (0, "survived\n"), run.stderr


def test_debug_prints_path_command_and_timing(cache, monkeypatch, capsys):
    monkeypatch.setenv("NETC_DEBUG", "build")
    lib = build(ADD, ADD_CDEF)
    err = capsys.readouterr().err
    assert str(cache) in err and "-Wall -Wextra" in err and f"built {lib.path} in" in err
    build(ADD, ADD_CDEF)
    assert "cache hit" in capsys.readouterr().err


def test_bad_cdef_and_unwritable_cache_are_build_errors(cache, tmp_path, monkeypatch):
    with pytest.raises(BuildError, match="cdef"):
        build(ADD, "int add(int a, int b")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("NETC_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(BuildError, match="NETC_CACHE"):
        build(ADD, ADD_CDEF)


def test_build_executable_and_sanitizers(tmp_path):
    ok = build_executable('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n',
                          tmp_path / "hello", ["-O1"])
    assert subprocess.run([ok], capture_output=True, text=True).stdout == "hi\n"
    with pytest.raises(BuildError):
        build_executable("int main(void) { return }\n", tmp_path / "broken", [])
    if not sanitizers_available():
        pytest.skip("no AddressSanitizer/UBSan runtime for this compiler")
    overflow = ("#include <stdlib.h>\nint main(int argc, char **argv) {\n"
                "    (void)argv;\n    int *a = malloc(4 * sizeof *a);\n"
                "    a[argc + 3] = 1;\n    free(a);\n    return 0;\n}\n")
    bad = build_executable(overflow, tmp_path / "overflow", ["-g", "-fsanitize=address,undefined"])
    run = subprocess.run([bad], capture_output=True, text=True, env={**os.environ})
    assert run.returncode != 0 and "heap-buffer-overflow" in run.stderr
