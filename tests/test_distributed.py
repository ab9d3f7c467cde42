"""Data-parallel training over MPI (netc.distributed, docs/distributed.md), each job started with
the mpiexec of the mpi extra under a hard timeout: a hang fails the test instead of CI.

The steps of 2 and 3 ranks equal one process's to 1e-10 (float64, SGD with momentum, Adam, weight
decay); ranks seeded differently agree after the broadcast; 2-rank runs are bitwise repeatable;
sizes that no batch or rank count divides finish; a rank that raises or is killed ends the job
at once; Ctrl-C stops every rank with the last epoch saved; a 1-rank checkpoint resumes on 2;
LeNet-5 on 2 ranks reaches one process's test accuracy; without MPI nothing of it is imported.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mpi_worker
from netc import checkpoint
from netc.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT = 120  # seconds any one job may take before the test fails as hung
# compiling fast matters more here than running fast; LeNet-5's accuracy run builds as users do
QUICK_BUILD = os.environ | {"NETC_CFLAGS": "-O1"}
SPEC = mpi_worker.SPEC
# 99 samples: 10 held out leave 89, 11 batches of 8 and one sample, too few for 2 ranks (left
# out); 7 test samples: shards of 3 and 4
OPTIONS = ["--batch", "8", "--epochs", "2", "--lr", "0.1"]


@pytest.fixture(scope="module", autouse=True)
def _mpi():
    if shutil.which(MPIEXEC) is None:
        pytest.fail(f"no {MPIEXEC}: install the mpi extra, pip install -e '.[test,plot,mpi,onnx]'",
                    pytrace=False)


def mpiexec(ranks: int, *args: str, env=QUICK_BUILD) -> subprocess.CompletedProcess:
    return subprocess.run([str(MPIEXEC), "-n", str(ranks), sys.executable, *args],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=HERE, env=env)


def netc(*args: str, env=QUICK_BUILD) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netc", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=HERE, env=env)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A folder with small.net and points.npz (random 8x8 images, 4 classes)."""
    folder = tmp_path_factory.mktemp("small")
    (folder / "small.net").write_text(SPEC)
    rng = np.random.default_rng(3)
    np.savez(folder / "points.npz", x=rng.integers(0, 256, (99, 8, 8), np.uint8),
             y=rng.integers(0, 4, 99), x_test=rng.integers(0, 256, (7, 8, 8), np.uint8),
             y_test=rng.integers(0, 4, 7))
    return folder


def train_args(small: Path, out: Path, *more: str) -> list[str]:
    return [str(small / "small.net"), "--data", str(small / "points.npz"), "--out", str(out),
            *OPTIONS, *more]


def tensors(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


@pytest.mark.parametrize("ranks", [2, 3])
def test_steps_equal_one_process_start_from_rank_0_and_average_batchnorm(tmp_path, ranks):
    out = tmp_path / "params.npz"
    job = mpiexec(ranks, "mpi_worker.py", "steps", str(out))
    assert job.returncode == 0, job.stderr
    with np.load(out) as got:
        for case in mpi_worker.CASES:
            before, after = got[f"{case}/before"], got[f"{case}/after"]
            assert len({tuple(row) for row in before}) == ranks  # each rank its own init
            assert (after == after[0]).all()  # rank 0's, bit for bit, on every rank
            assert (after[0] == before[0]).all()
            for name, want in mpi_worker.one_process(case).items():
                error = np.abs(got[f"{case}/{name}"] - want).max() / np.abs(want).max()
                assert error < 1e-10, (case, name, error)
        # BatchNorm's running statistics: each rank's own from its shards, then their mean
        before, after = got["norm_before"], got["norm_after"]
        assert len({tuple(row) for row in before}) == ranks
        assert np.allclose(after, before.mean(axis=0), rtol=1e-14, atol=0)


@pytest.fixture(scope="module")
def twice(small, tmp_path_factory):
    """The same deterministic 2-rank run, twice."""
    runs = []
    for i in range(2):
        out = tmp_path_factory.mktemp(f"twice{i}")
        job = mpiexec(2, "-m", "netc", "train", *train_args(small, out, "--deterministic"))
        runs.append((job, out))
    return runs


def test_deterministic_two_rank_runs_are_bitwise_equal(twice):
    (first, a), (second, b) = twice
    assert first.returncode == 0 == second.returncode, first.stderr + second.stderr
    x, y = tensors(a / "checkpoint.npz"), tensors(b / "checkpoint.npz")
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    losses = [[e["train_loss"] for e in checkpoint.read(d / "checkpoint.npz").meta["state"]
               ["history"]] for d in (a, b)]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_sizes_no_batch_or_rank_divides_finish_and_only_rank_0_speaks(twice):
    job, out = twice[0]
    assert "test accuracy" in job.stdout and "errors in 7)" in job.stdout  # 3 + 4 test samples
    assert "2 ranks × 1 thread" in job.stdout
    assert job.stdout.count("epoch 2/2") == 1 and job.stdout.count("checkpoint:") == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 3  # 2 epochs and the test


@pytest.fixture(scope="module")
def one_rank(small, tmp_path_factory) -> Path:
    """A 1-process run of 2 epochs: its checkpoint."""
    out = tmp_path_factory.mktemp("one")
    job = netc("train", *train_args(small, out))
    assert job.returncode == 0, job.stderr
    return out / "checkpoint.npz"


def test_a_one_process_checkpoint_resumes_on_two_ranks(one_rank, small, tmp_path):
    alone, team = tmp_path / "alone", tmp_path / "team"
    for d in (alone, team):
        d.mkdir()
        shutil.copy(one_rank, d / "checkpoint.npz")
    for d in (alone, team):
        # batches of 9 leave a last one of 8 samples: the steps of 1 and 2 ranks are the same
        more = [str(small / "small.net"), "--resume", str(d / "checkpoint.npz"), "--epochs", "4",
                "--batch", "9"]
        job = (netc("train", *more) if d is alone
               else mpiexec(2, "-m", "netc", "train", *more))
        assert job.returncode == 0, job.stderr
    assert "resuming from" in job.stdout and "after epoch 2" in job.stdout
    a, b = (checkpoint.read(d / "checkpoint.npz") for d in (alone, team))
    assert b.meta["state"]["epoch"] == 4
    first = checkpoint.read(one_rank).meta["state"]["history"]
    assert b.meta["state"]["history"][:2] == first  # the 1-rank epochs kept
    # Two more epochs on 2 ranks go on from the saved state: the 1-process weights, up to
    # float32 rounding (a fresh start would be far off).
    for name, want in a.group("param").items():
        got = b.group("param")[name]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), name


def test_a_rank_that_raises_ends_the_job_naming_it(small, tmp_path):
    start = time.monotonic()
    job = mpiexec(2, "mpi_worker.py", "train", "raise", *train_args(small, tmp_path))
    assert job.returncode != 0 and time.monotonic() - start < 30
    assert "rank 1: error: a disk failed on purpose" in job.stderr


def test_a_batch_too_small_for_the_ranks_is_refused(small, tmp_path):
    job = mpiexec(2, "-m", "netc", "train", *train_args(small, tmp_path, "--batch", "1"))
    assert job.returncode == 4  # a DataError's status, through MPI_Abort
    assert "a batch of 1 cannot be shared by 2 ranks" in job.stderr
    assert "Traceback" not in job.stderr


def test_a_killed_rank_ends_the_job_and_the_checkpoint_is_intact(one_rank, small, tmp_path):
    saved = tmp_path / "checkpoint.npz"
    shutil.copy(one_rank, saved)
    start = time.monotonic()
    job = mpiexec(2, "mpi_worker.py", "train", "kill", str(small / "small.net"), "--resume",
                  str(saved), "--epochs", "4")
    assert job.returncode != 0 and time.monotonic() - start < 30
    pids = re.search(r"pids (\d+)@\S+, (\d+)@", job.stdout)  # the header names each rank's
    assert f"PID {pids[2]} " in job.stdout + job.stderr  # mpiexec's message names rank 1's
    assert "signal 9" in job.stdout + job.stderr
    assert checkpoint.read(saved).meta["state"]["epoch"] == 2


@pytest.mark.parametrize("launch", ["mpiexec", "--ranks"])
def test_ctrl_c_stops_every_rank_with_the_last_epoch_saved(small, tmp_path, launch):
    log = tmp_path / "log.jsonl"
    args = ["-m", "netc", "train", *train_args(small, tmp_path, "--epochs", "100000")]
    command = ([str(MPIEXEC), "-n", "2", sys.executable, *args] if launch == "mpiexec"
               else [sys.executable, *args, "--ranks", "2"])
    job = subprocess.Popen(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=QUICK_BUILD)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (log.exists() and len(log.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline and job.poll() is None
            time.sleep(0.1)
        job.send_signal(signal.SIGINT)  # Ctrl-C; mpiexec passes it on to the ranks
        out, err = job.communicate(timeout=30)
    finally:
        job.kill()
    assert job.returncode == 130, err
    assert "2 ranks × 1 thread" in out  # --ranks 2 started them
    assert err.count("interrupted: ") == 1 and "continue with --resume" in err
    epochs = len(log.read_text().splitlines())
    assert checkpoint.read(tmp_path / "checkpoint.npz").meta["state"]["epoch"] == epochs


def test_a_divergence_stops_every_rank_once_and_keeps_the_checkpoint(one_rank, small,
                                                                     tmp_path):
    saved = tmp_path / "checkpoint.npz"
    shutil.copy(one_rank, saved)
    before = saved.read_bytes()
    job = mpiexec(2, "-m", "netc", "train", str(small / "small.net"), "--resume", str(saved),
                  "--epochs", "4", "--lr", "1e9")
    assert job.returncode == 5, job.stderr
    assert job.stderr.count("training diverged") == 1 and "rank" not in job.stderr
    assert saved.read_bytes() == before


def test_early_stopping_on_two_ranks_tests_the_best_epoch(small, tmp_path):
    job = mpiexec(2, "-m", "netc", "train", *train_args(small, tmp_path, "--epochs", "30",
                                                         "--early-stop", "1"))
    assert job.returncode == 0, job.stderr
    best = checkpoint.read(tmp_path / "best.npz").meta["state"]["epoch"]
    assert f"using epoch {best}" in job.stdout and re.search(r"checkpoint: \S*best\.npz",
                                                             job.stdout)
    # both ranks tested best.npz's weights: the loss one process finds with them
    alone = netc("eval", str(small / "small.net"), str(tmp_path / "best.npz"))
    loss = re.search(r"loss (\d\.\d{4}), accuracy", alone.stdout)[1]
    assert re.search(r"test accuracy .*, loss (\d\.\d{4})", job.stdout)[1] == loss


def test_lenet5_on_two_ranks_reaches_one_process_accuracy(tmp_path):
    """CI's short form (2 epochs) of the full comparison in docs/distributed.md."""
    spec, short = str(ROOT / "examples" / "lenet5.net"), ["--epochs", "2"]
    alone = netc("train", spec, *short, "--out", str(tmp_path / "one"), env=None)
    team = mpiexec(2, "-m", "netc", "train", spec, *short, "--out", str(tmp_path / "two"),
                   env=None)
    accuracy = [float(re.search(r"test accuracy ([\d.]+)%", job.stdout)[1])
                for job in (alone, team)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.3, accuracy
    assert accuracy[0] > 95


def test_without_the_extra_a_launched_job_says_what_to_install(monkeypatch, capsys, small,
                                                               tmp_path):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    monkeypatch.delenv("PMI_SIZE", raising=False)
    for args, env in ((["--ranks", "2"], None), ([], "2")):
        if env:
            monkeypatch.setenv("PMI_SIZE", env)
        assert main(["train", *train_args(small, tmp_path), *args]) == 2
        err = capsys.readouterr().err
        assert "pip install 'netc[mpi]'" in err and "Traceback" not in err
    monkeypatch.setenv("PMI_SIZE", "3")
    assert main(["train", *train_args(small, tmp_path), "--ranks", "2"]) == 2
    assert "--ranks 2, but mpiexec started 3 ranks" in capsys.readouterr().err


def test_one_process_imports_no_mpi(small, tmp_path):
    code = ("import sys; from netc.cli import main; "
            f"code = main(['train', *{train_args(small, tmp_path, '--epochs', '1')!r}]); "
            "print('mpi4py' in sys.modules); sys.exit(code)")
    env = {k: v for k, v in QUICK_BUILD.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT, env=env)
    assert job.returncode == 0, job.stderr
    assert job.stdout.splitlines()[-1] == "False" and "test accuracy" in job.stdout



@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_loss_and_grad_then_update_is_train_step(optimizer):
    """What a rank runs, in one process: Model.gradient holds every grads view, and
    Model.update after loss_and_grad is train_step's update, bit for bit."""
    x, y = mpi_worker.data()
    fused, split = (mpi_worker.load(SPEC).compile(batch=8, dtype="float64", optimizer=optimizer)
                    for _ in range(2))
    hyper = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    for s in range(3):
        batch = slice(8 * s, 8 * s + 8)
        fused.train_step(x[batch], y[batch], **hyper)
        split.loss_and_grad(x[batch], y[batch])
        split.update(**hyper)
    assert all(np.array_equal(fused.params[k], split.params[k]) for k in fused.params)
    split.gradient[...] = 0
    assert all((g == 0).all() for g in split.grads.values())
    assert sum(g.size for g in split.grads.values()) <= split.gradient.size
