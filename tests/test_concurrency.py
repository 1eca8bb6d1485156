"""Threads: concurrent calls (kernels, losses, modules) give the bits of serial calls, at any
BLAS / team thread count; results are bitwise reproducible."""

import threading

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, DTYPES, assert_bitwise, random_case, run_case
from rnnkit import nn


def _thread_cases(rng):
    """One job per cell and batch size: the register-blocked (B = 2) and the BLAS (B = 40)
    per-step products, with lengths, both directions; plus the loss."""
    jobs = []
    for n, cell in enumerate(CELLS):
        for B_ in (2, 40):
            dtype = DTYPES[(n + B_) % 2]
            case = random_case(cell, 9, B_, 24, 32, dtype, rng, lengths="random")
            jobs.append(lambda cell=cell, case=case, rev=bool(n % 2): run_case(rnnkit, cell, case, rev))
    logits = rng.standard_normal((300, 50)).astype(np.float32)
    t = rng.integers(0, 50, size=300)
    jobs.append(lambda: list(rnnkit.softmax_cross_entropy(logits, t)) + [rnnkit.softmax(logits)])
    return jobs


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_concurrent_calls_match_serial_calls_bitwise(blas_threads, rng):
    jobs = _thread_cases(rng)
    old = rnnkit.get_num_threads()
    rnnkit.set_num_threads(blas_threads)
    try:
        serial = [job() for job in jobs]
        n_threads, rounds = 4, 3
        results = [[None] * len(jobs) for _ in range(n_threads)]
        errors = []
        barrier = threading.Barrier(n_threads)

        def worker(w):
            try:
                barrier.wait()
                for r in range(rounds):
                    # each thread walks the jobs in its own order, so different calls overlap
                    for j in np.random.default_rng(w * 10 + r).permutation(len(jobs)):
                        out = jobs[j]()
                        if results[w][j] is None:
                            results[w][j] = out
                        else:
                            assert_bitwise(out, results[w][j], f"thread {w} job {j} round {r}")
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        rnnkit.set_num_threads(old)
    assert not errors, errors[0]
    for w in range(n_threads):
        for j, want in enumerate(serial):
            assert_bitwise(results[w][j], want, f"thread {w} job {j}")


def test_results_are_bitwise_reproducible(rng):
    jobs = _thread_cases(rng)
    old = rnnkit.get_num_threads()
    try:
        for n in (1, 2):
            rnnkit.set_num_threads(n)
            first = [job() for job in jobs]
            rnnkit.set_num_threads(3 - n)  # run at the other count in between
            [job() for job in jobs[:3]]
            rnnkit.set_num_threads(n)
            for _ in range(2):
                for j, job in enumerate(jobs):
                    assert_bitwise(job(), first[j], f"{n} threads, job {j}")
    finally:
        rnnkit.set_num_threads(old)


def test_concurrent_modules():
    """Separate module instances in separate threads: same as serial."""
    x = np.random.default_rng(5).standard_normal((6, 3, 4)).astype(np.float32)

    def job(seed):
        m = nn.LSTM(4, 8, num_layers=2, bidirectional=True, seed=seed)
        out, (h, c) = m(x, lengths=np.array([6, 2, 4]))
        dx, _ = m.backward(np.ones_like(out))
        return [out, h, c, dx] + [p.grad for p in m.parameters()]

    serial = [job(s) for s in range(8)]
    results = [None] * 8
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, job(s))) for s in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in range(8):
        assert_bitwise(results[s], serial[s], f"module {s}")
