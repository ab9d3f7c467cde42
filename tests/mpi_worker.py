"""What each rank runs in tests/test_distributed.py, under mpiexec.

    python tests/mpi_worker.py steps OUT.npz        5 float64 steps per optimizer case (CASES)
    python tests/mpi_worker.py train FAULT ARGS...  `netc train ARGS`, rank 1 failing as FAULT
                                                     says: none, raise (a DataError) or kill, at its
                                                     3rd step
"""
import os
import signal
import sys

import numpy as np

from netc import cli, distributed
from netc.errors import DataError
from netc.runtime import Model, load

# No dropout or BatchNorm: with them a rank's step is not a slice of one process's step.
SPEC = """network small
input 1x8x8
conv(3, k=3, act=tanh) - maxpool(2) - fc(6, act=tanh) - softmax(4)
"""
NORM = """network norm
input 1x8x8
conv(3, k=3) - bn - relu - fc(4) - softmax
"""
SAMPLES, BATCH, STEPS = 40, 8, 5  # the global batch: 8 samples split over 2 or 3 ranks
CASES = {"sgd": dict(optimizer="sgd", momentum=0.9, weight_decay=0.0),
         "sgd_decay": dict(optimizer="sgd", momentum=0.9, weight_decay=0.01),
         "adam": dict(optimizer="adam", weight_decay=0.0),
         "adam_decay": dict(optimizer="adam", weight_decay=0.01)}
LR = 0.05


def data():
    rng = np.random.default_rng(7)
    return rng.normal(size=(SAMPLES, 1, 8, 8)), rng.integers(0, 4, SAMPLES)


def one_process(case: str) -> dict[str, np.ndarray]:
    """The reference: one model, the whole global batch per step, the fused train_step."""
    optimizer, hyper = CASES[case]["optimizer"], _hyper(case)
    model = load(SPEC).compile(batch=BATCH, dtype="float64", optimizer=optimizer)
    model.init(1)  # rank 0's seed in steps()
    x, y = data()
    for s in range(STEPS):
        model.train_step(x[s * BATCH:(s + 1) * BATCH], y[s * BATCH:(s + 1) * BATCH], lr=LR,
                         **hyper)
    return {k: v.copy() for k, v in model.params.items()}


def steps(out: str) -> None:
    """Each rank seeded differently (rank + 1), rank 0's state shared, then STEPS steps of the
    team; rank 0 writes every case's parameters, and the parameters' sums on each rank before
    and after share_state. Then 2 steps of a BatchNorm net: each rank's running statistics
    before and after average_buffers."""
    team = distributed.join()
    x, y = data()
    results = {}
    for case in CASES:
        model = load(SPEC).compile(batch=-(-BATCH // team.size), dtype="float64",
                                   optimizer=CASES[case]["optimizer"])
        model.init(team.rank + 1)
        before = team.comm.gather(_fingerprint(model))
        team.share_state(model)
        after = team.comm.gather(_fingerprint(model))
        for s in range(STEPS):
            mine = team.shard(np.arange(s * BATCH, (s + 1) * BATCH))
            team.train_step(model, x[mine], y[mine], BATCH, LR, _hyper(case))
        if team.root:
            results |= {f"{case}/{k}": v for k, v in model.params.items()}
            results |= {f"{case}/before": np.array(before), f"{case}/after": np.array(after)}
    model = load(NORM).compile(batch=-(-BATCH // team.size), dtype="float64")
    team.share_state(model)
    for s in range(2):
        mine = team.shard(np.arange(s * BATCH, (s + 1) * BATCH))
        team.train_step(model, x[mine], y[mine], BATCH, LR, _hyper("sgd"))
    before = team.comm.gather(np.concatenate(list(model.buffers.values())))
    team.average_buffers(model)
    after = team.comm.gather(np.concatenate(list(model.buffers.values())))
    if team.root:
        np.savez(out, **results, norm_before=np.array(before), norm_after=np.array(after))


def _hyper(case: str) -> dict:
    return {k: v for k, v in CASES[case].items() if k != "optimizer"}


def _fingerprint(model: Model) -> list[float]:
    return [float(v.sum()) for v in model.params.values()]


def train(fault: str, args: list[str]) -> int:
    if fault != "none" and distributed.launched_size() > 1 and os.environ["PMI_RANK"] == "1":
        calls, step = [0], Model.loss_and_grad

        def failing(self, *a, **k):
            calls[0] += 1
            if calls[0] == 3:
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise DataError("a disk failed on purpose")
            return step(self, *a, **k)
        Model.loss_and_grad = failing
    return cli.main(["train", *args])


if __name__ == "__main__":
    if sys.argv[1] == "steps":
        steps(sys.argv[2])
    else:
        sys.exit(train(sys.argv[2], sys.argv[3:]))
