"""Sequence-to-sequence demo: reverse (or sort) sequences of random tokens, with and without
attention.

    python -m rnnkit demo reverse [--quick] [--out DIR] [options]
    python -m rnnkit demo sort    [--quick] [--out DIR] [options]

Each source is a sequence of random tokens (``--symbols`` of them) of length ``--min-len`` to
``--max-len`` (5 to 20); its target is the sequence reversed (or sorted), then an end token.
A held-out test set (``--test-per-length`` sequences of every length) and a validation set are
drawn first and never appear in training. Two :class:`rnnkit.seq2seq.Seq2Seq` models are
trained with Adam and gradient clipping on freshly generated batches
(:func:`rnnkit.training.fit`), the learning rate halved whenever the validation accuracy has not
improved for two evaluations (the same rule for both):

* with attention (additive by default, input feeding), until its validation exact-match
  accuracy reaches ``--target`` or its time budget runs out;
* without attention (the decoder sees the source only through its initial state), for its
  time budget.

Both are then scored on the test set by greedy decoding: exact match (every token and the end
token right), overall and by source length -- the model without attention has to squeeze the
whole sequence into one vector and its accuracy falls with the length, the attention model
reads each source token where it needs it (sorting, which only needs the counts of each
symbol, is learnt without attention too). Writes ``<task>_results.json`` and (with
matplotlib) ``<task>_attention.png``, the attention weights of one test example (a heat map:
for reversal, the anti-diagonal), and ``<task>_accuracy_by_length.png``.

Shape letters: S source steps, T target steps, B batch, N sequences.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time

import numpy as np

from .._cells import CELL_NAMES, LSTM_CELL
from ..models import Seq2Seq, beam_search, greedy_decode
from ..train import Adam, Callback, EarlyStopping, Evaluate, fit
from ._common import Threads, add_run_args, config

PAD, BOS, EOS = 0, 1, 2
FIRST = 3  # the first ordinary token id
TASKS = ("reverse", "sort")

FULL = dict(
    symbols=20,
    min_len=5,
    max_len=20,
    embedding=32,
    hidden=128,
    cell=LSTM_CELL.name,
    attention="additive",
    batch=64,
    lr=3e-3,
    lr_decay=0.5,
    lr_patience=2,
    lr_min=1e-4,
    clip=5.0,
    eval_every=100,
    val_size=1024,
    test_per_length=200,
    target=0.999,
    budget=330.0,
    budget_plain=200.0,
    steps=20000,
    beam=5,
)
QUICK = dict(
    symbols=8,
    min_len=3,
    max_len=8,
    embedding=16,
    hidden=32,
    cell=LSTM_CELL.name,
    attention="additive",
    batch=32,
    lr=1e-2,
    lr_decay=0.5,
    lr_patience=2,
    lr_min=1e-4,
    clip=5.0,
    eval_every=50,
    val_size=128,
    test_per_length=25,
    target=0.98,
    budget=20.0,
    budget_plain=8.0,
    steps=1500,
    beam=3,
)


# ============================================================================ data


def target_of(seq, task):
    """The target token sequence of a source sequence (without the end token)."""
    return seq[::-1] if task == "reverse" else np.sort(seq)


def make_batch(seqs, task):
    """src (S, B) padded with PAD, src_lengths (B,), tgt (T, B) = target + EOS, padded."""
    B = len(seqs)
    lengths = np.array([len(s) for s in seqs], np.int64)
    S = int(lengths.max())
    src = np.full((S, B), PAD, np.int64)
    tgt = np.full((S + 1, B), PAD, np.int64)
    for b, s in enumerate(seqs):
        n = len(s)
        src[:n, b] = s
        tgt[:n, b] = target_of(s, task)
        tgt[n, b] = EOS
    return src, lengths, tgt


class SequenceSource:
    """Random token sequences with uniform lengths in [min_len, max_len]; sequences in
    ``exclude`` (a set of tuples, the held-out sets) are redrawn."""

    def __init__(self, symbols, min_len, max_len, rng, exclude=()):
        self.symbols, self.min_len, self.max_len = symbols, min_len, max_len
        self.rng = rng
        self.exclude = exclude

    def draw(self, n, length=None, hold_out=False):
        """n sequences (of the given length, else uniform lengths); with hold_out, each one is
        added to the excluded set as it is drawn (so they are distinct too)."""
        out: list[np.ndarray] = []
        while len(out) < n:
            L = length if length is not None else int(self.rng.integers(self.min_len, self.max_len + 1))
            s = self.rng.integers(FIRST, FIRST + self.symbols, L)
            key = tuple(s.tolist())
            if key not in self.exclude:
                out.append(s)
                if hold_out:
                    self.exclude.add(key)
        return out


def held_out_sets(cfg, seed):
    """Test set (stratified: test_per_length of every length) and validation set, disjoint
    from each other; returns (test sequences, validation sequences, the excluded set)."""
    rng = np.random.default_rng([seed, 0])
    seen: set[tuple[int, ...]] = set()
    src = SequenceSource(cfg["symbols"], cfg["min_len"], cfg["max_len"], rng, seen)
    test = []
    for L in range(cfg["min_len"], cfg["max_len"] + 1):
        test += src.draw(cfg["test_per_length"], L, hold_out=True)
    val = src.draw(cfg["val_size"], hold_out=True)
    return test, val, seen


# ============================================================================ evaluation


def decode(model, seqs, *, beam=1, chunk=512, return_attention=False):
    """Decoded token lists for the source sequences (greedy, or beam search)."""

    out, atts = [], []
    for i in range(0, len(seqs), chunk):
        part = seqs[i : i + chunk]
        src, lengths, _ = make_batch(part, "reverse")
        max_len = int(lengths.max()) + 5
        if beam > 1:
            res = beam_search(model, src, lengths, beam_width=beam, max_len=max_len)
        else:
            res = greedy_decode(model, src, lengths, max_len=max_len, return_attention=return_attention)
        out += res.as_lists()
        if return_attention:
            atts.append(res)
    return (out, atts) if return_attention else out


def exact_match(model, seqs, task, *, beam=1):
    """(overall exact-match accuracy, {length: accuracy}) of decoding seqs."""
    hyps = decode(model, seqs, beam=beam)
    ok = np.array([h == target_of(s, task).tolist() for h, s in zip(hyps, seqs)])
    lengths = np.array([len(s) for s in seqs])
    by_len = {int(L): float(ok[lengths == L].mean()) for L in np.unique(lengths)}
    return float(ok.mean()), by_len


# ============================================================================ training


def _log(*a):
    print(*a, flush=True)


def _plateau_decay(factor, patience, lr_min, monitor="val_exact"):
    """A callback (after the Evaluate that records ``monitor``) that multiplies the learning
    rate by ``factor`` (not below ``lr_min``) whenever ``patience`` evaluations in a row have
    not beaten the best value so far -- the same rule for every model, adapting to how fast
    each one learns."""

    class ReduceOnPlateau(Callback):
        def __init__(self):
            self.best, self.bad, self.seen, self.changes = None, 0, 0, []

        def on_step_end(self, state):
            h = state.history.get(monitor, [])
            if len(h) == self.seen:
                return
            self.seen = len(h)
            value = h[-1][1]
            if self.best is None or value > self.best:
                self.best, self.bad = value, 0
                return
            self.bad += 1
            opt = state.optimizer
            if factor < 1 and self.bad >= patience and opt.lr > lr_min:
                opt.lr = max(lr_min, opt.lr * factor)
                self.bad = 0
                self.changes.append((state.step, opt.lr))
                state.postfix["lr"] = f"{opt.lr:.2g}"

    return ReduceOnPlateau()


def train_model(
    cfg, task, attention, val, seen, *, seed, budget, dtype, progress=True, target=None, log=_log
):
    """Train one Seq2Seq; returns (model, result dict)."""

    V = FIRST + cfg["symbols"]
    model = Seq2Seq(
        V,
        V,
        embedding_dim=cfg["embedding"],
        hidden_size=cfg["hidden"],
        encoder_cell=cfg["cell"],
        attention=attention,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
        dtype=dtype,
        seed=seed,
    )
    opt = Adam(model.parameters(), lr=cfg["lr"])
    data_src = SequenceSource(
        cfg["symbols"], cfg["min_len"], cfg["max_len"], np.random.default_rng([seed, 1]), seen
    )

    def data(step):
        src, lengths, tgt = make_batch(data_src.draw(cfg["batch"]), task)
        return (src, tgt, lengths), tgt

    curve_t = []
    t0 = time.perf_counter()

    def val_acc(m):
        curve_t.append(time.perf_counter() - t0)
        return exact_match(m, val, task)[0]

    decay = _plateau_decay(cfg["lr_decay"], cfg["lr_patience"], cfg["lr_min"])
    callbacks = [Evaluate(val_acc, every=cfg["eval_every"], name="val_exact"), decay]
    if target:
        callbacks.append(EarlyStopping("val_exact", mode="max", patience=10**9, target=target))
    name = f"{task} {'attention' if attention else 'no attention'}"
    state = fit(
        model,
        model.make_loss(),
        opt,
        data,
        steps=cfg["steps"],
        clip_norm=cfg["clip"],
        callbacks=callbacks,
        progress=progress,
        desc=name,
        log_every=10,
        time_limit=budget,
    )
    wall = time.perf_counter() - t0
    curve = state.history["val_exact"]
    res = {
        "attention": attention,
        "steps": state.step,
        "train_seconds": wall,
        "steps_per_second": state.step / wall,
        "final_val_exact": curve[-1][1],
        "stop_reason": state.stop_reason or "max steps",
        "val_curve": [(s, v, t) for (s, v), t in zip(curve, curve_t)],
        "final_train_loss": state.loss,
        "lr_changes": decay.changes,
    }
    log(
        f"{name}: validation exact match {curve[-1][1]:.4f} after {state.step} steps, "
        f"{wall:.1f} s ({res['stop_reason']})"
    )
    return model, res


# ============================================================================ plots


def _plots(out, task, results, model, example, cfg):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    # accuracy by length
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        Ls = sorted(int(k) for k in r["test_by_length"])
        ax.plot(
            Ls,
            [r["test_by_length"][str(L)] * 100 for L in Ls],
            "o-",
            label=("attention (" + r["attention"] + ")") if r["attention"] else "no attention",
        )
    ax.set_xlabel("source length")
    ax.set_ylabel("exact match on held-out sequences (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{task}: {cfg['symbols']} symbols, greedy decoding")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, f"{task}_accuracy_by_length.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)
    # attention heat map of one example
    if model is not None:
        (hyp,), (res,) = decode(model, [example], return_attention=True)
        n_out = int(res.lengths[0])
        w = res.attention[:n_out, 0, : len(example)]  # (T_out, S)
        fig, ax = plt.subplots(figsize=(0.42 * len(example) + 2, 0.42 * n_out + 1.6))
        im = ax.imshow(w, cmap="viridis", vmin=0, vmax=1, aspect="equal")
        name = {PAD: "<pad>", BOS: "<bos>", EOS: "<eos>"}
        ax.set_xticks(range(len(example)))
        ax.set_xticklabels([str(int(t) - FIRST) for t in example])
        ax.set_yticks(range(n_out))
        ax.set_yticklabels([name.get(int(t), str(int(t) - FIRST)) for t in res.tokens[:n_out, 0]])
        ax.set_xlabel("source token")
        ax.set_ylabel("output token")
        ax.set_title(f"{task}: attention weights ({cfg['attention']})")
        fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        path = os.path.join(out, f"{task}_attention.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


# ============================================================================ main


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m rnnkit demo reverse|sort",
        description="Seq2seq with and without attention on reversing or sorting random token sequences.",
    )
    p.add_argument("task", nargs="?", choices=TASKS, default="reverse")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds), for tests")
    p.add_argument("--out", default=None, help="output directory (default <task>-demo)")
    p.add_argument("--symbols", type=int, help="distinct tokens")
    p.add_argument("--min-len", type=int, dest="min_len")
    p.add_argument("--max-len", type=int, dest="max_len")
    p.add_argument("--embedding", type=int, help="embedding size E")
    p.add_argument("--hidden", type=int, help="decoder hidden size H (encoder: H/2 per direction)")
    p.add_argument("--cell", choices=CELL_NAMES)
    p.add_argument("--attention", choices=("additive", "dot", "general"))
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate (initial)")
    p.add_argument(
        "--lr-decay",
        type=float,
        dest="lr_decay",
        help="multiply the learning rate by this after --lr-patience evaluations "
        "without a new best validation accuracy (1: never)",
    )
    p.add_argument("--lr-patience", type=int, dest="lr_patience")
    p.add_argument("--lr-min", type=float, dest="lr_min")
    p.add_argument("--clip", type=float, help="global gradient-norm clip")
    p.add_argument("--steps", type=int, help="max training steps per model")
    p.add_argument("--eval-every", type=int, dest="eval_every")
    p.add_argument("--val-size", type=int, dest="val_size")
    p.add_argument("--test-per-length", type=int, dest="test_per_length")
    p.add_argument("--target", type=float, help="stop the attention model at this validation exact match")
    p.add_argument("--budget", type=float, help="seconds for the attention model")
    p.add_argument(
        "--budget-plain",
        type=float,
        dest="budget_plain",
        help="seconds for the model without attention (0: skip it)",
    )
    p.add_argument("--beam", type=int, help="also score the attention model with this beam width (1: skip)")
    add_run_args(p)
    return p


def _config(args):
    cfg = config(args, QUICK, FULL)
    if not 1 <= cfg["min_len"] <= cfg["max_len"]:
        raise SystemExit("--min-len/--max-len: need 1 <= min_len <= max_len")
    return cfg


def main(argv=None):
    """Run the demo; returns the results dict (also written to <out>/<task>_results.json)."""
    args = _parser().parse_args(argv)
    cfg = _config(args)
    with Threads(args.threads):
        return _run(args, cfg, argv)


def _run(args, cfg, argv):
    task = args.task
    out = args.out or f"{task}-demo"
    os.makedirs(out, exist_ok=True)
    dtype = np.dtype(args.dtype)
    test, val, seen = held_out_sets(cfg, args.seed)
    lengths = range(cfg["min_len"], cfg["max_len"] + 1)
    print(
        f"{task}: {cfg['symbols']} symbols, lengths {cfg['min_len']}..{cfg['max_len']}, "
        f"{cfg['cell']} E={cfg['embedding']} H={cfg['hidden']} B={cfg['batch']} "
        f"lr={cfg['lr']} (x{cfg['lr_decay']} after {cfg['lr_patience']} evaluations without "
        f"progress, min {cfg['lr_min']}) "
        f"clip={cfg['clip']}; held out: {len(test)} test, {len(val)} "
        f"validation sequences; threads={args.threads}, {dtype.name}",
        flush=True,
    )
    t_all = time.perf_counter()
    results, att_model = [], None
    runs = [(cfg["attention"], cfg["budget"], cfg["target"])]
    if cfg["budget_plain"] and cfg["budget_plain"] > 0:
        runs.append((None, cfg["budget_plain"], None))
    for k, (attention, budget, target) in enumerate(runs):
        model, res = train_model(
            cfg,
            task,
            attention,
            val,
            seen,
            seed=args.seed + 1 + k,
            budget=budget,
            dtype=dtype,
            progress=not args.no_progress,
            target=target,
        )
        t = time.perf_counter()
        acc, by_len = exact_match(model, test, task)
        res["test_exact"] = acc
        res["test_by_length"] = {str(L): v for L, v in by_len.items()}
        res["test_seconds"] = time.perf_counter() - t
        if attention and cfg["beam"] and cfg["beam"] > 1:
            t = time.perf_counter()
            acc_b, by_len_b = exact_match(model, test, task, beam=cfg["beam"])
            res["test_exact_beam"] = acc_b
            res["test_by_length_beam"] = {str(L): v for L, v in by_len_b.items()}
            res["beam_seconds"] = time.perf_counter() - t
        if attention:
            att_model = model
        results.append(res)
    total = time.perf_counter() - t_all

    # report
    heads = [("attention" if r["attention"] else "no attention") for r in results]
    print(
        f"\nheld-out exact match by source length (greedy decoding, "
        f"{cfg['test_per_length']} sequences per length):"
    )
    print(f"{'length':>6} " + " ".join(f"{h:>14}" for h in heads))
    for L in lengths:
        print(f"{L:>6} " + " ".join(f"{r['test_by_length'][str(L)] * 100:>13.1f}%" for r in results))
    print(f"{'all':>6} " + " ".join(f"{r['test_exact'] * 100:>13.2f}%" for r in results))
    for h, r in zip(heads, results):
        beam = f"; beam {cfg['beam']}: {r['test_exact_beam'] * 100:.2f}%" if "test_exact_beam" in r else ""
        print(
            f"{h}: {r['steps']} steps in {r['train_seconds']:.1f} s "
            f"({r['steps_per_second']:.1f} steps/s){beam}"
        )
    print(f"total {total:.1f} s")

    meta = {
        "task": task,
        "config": cfg,
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "dtype": args.dtype,
        "threads": args.threads,
        "seed": args.seed,
        "total_seconds": total,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    summary = {"meta": meta, "results": results}
    path = os.path.join(out, f"{task}_results.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {path}")
    if not args.no_plot:
        example = (
            next(s for s in test if len(s) == min(cfg["max_len"], 14))
            if any(len(s) == min(cfg["max_len"], 14) for s in test)
            else test[-1]
        )
        for p in _plots(out, task, results, att_model, example, cfg):
            print(f"wrote {p}")
    return summary


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
