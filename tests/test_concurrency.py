"""Threads: concurrent calls (kernels, losses, modules) give the bits of serial calls, at any
BLAS / team thread count; results are bitwise reproducible."""

import sys
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


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_one_module_shared_by_threads_in_training_mode(cell, rng):
    """Threads sharing one module: each backward differentiates its own thread's forward (the
    kept workspaces are per thread), and .grad ends as the sum over every thread's call."""
    family = CELLS[cell][0]
    m = nn.module_class(family)(6, 8, num_layers=2, seed=0, dtype=np.float64)
    n_threads, rounds = 4, 20
    xs = [rng.standard_normal((7, 3, 6)) for _ in range(n_threads)]
    # serial results per input: the gradient w.r.t. x and the parameters' gradients
    expected_dx, expected_grads = [], []
    for x in xs:
        m.zero_grad()
        out, _ = m(x)
        dx, _ = m.backward(np.ones_like(out))
        expected_dx.append(dx)
        expected_grads.append([p.grad.copy() for p in m.parameters()])
    m.zero_grad()
    errors = []
    barrier = threading.Barrier(n_threads)

    def work(k):
        try:
            barrier.wait()
            for _ in range(rounds):
                out, _ = m(xs[k])
                dx, _ = m.backward(np.ones_like(out))
                np.testing.assert_allclose(dx, expected_dx[k], rtol=1e-12, atol=1e-12)
        except Exception as e:  # reported below, with the thread's index
            errors.append((k, e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, between any forward and its backward
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    for i, p in enumerate(m.parameters()):
        want = rounds * sum(g[i] for g in expected_grads)
        np.testing.assert_allclose(p.grad, want, rtol=1e-10, atol=1e-10, err_msg=p.name)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_a_threads_backward_pairs_with_its_own_forward(cell, rng):
    """The interleaving that went wrong, made deterministic: thread A runs forward, thread B
    runs forward, then A runs backward; A gets the gradients of its own input."""
    m = nn.module_class(CELLS[cell][0])(4, 5, seed=0, dtype=np.float64)
    xa, xb = rng.standard_normal((6, 2, 4)), rng.standard_normal((6, 2, 4))
    out, _ = m(xa)
    expected, _ = m.backward(np.ones_like(out))
    a_forward_done, b_forward_done = threading.Event(), threading.Event()
    got = {}

    def a():
        out, _ = m(xa)
        a_forward_done.set()
        b_forward_done.wait(10)
        got["dx"], _ = m.backward(np.ones_like(out))

    def b():
        a_forward_done.wait(10)
        m(xb)
        b_forward_done.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(got["dx"], expected, rtol=1e-12, atol=1e-12)


def test_eval_drops_every_threads_kept_forward(rng):
    m = nn.LSTM(3, 4, seed=0, dtype=np.float64)
    x = rng.standard_normal((5, 2, 3))
    t = threading.Thread(target=lambda: m(x))
    t.start()
    t.join()
    m(x)
    m.eval().train()
    with pytest.raises(RuntimeError, match="no forward"):
        m.backward(np.ones((5, 2, 4)))
