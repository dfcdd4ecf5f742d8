#!/usr/bin/env python
"""fastxent.torch against PyTorch's own losses, through autograd, side by side.

Two tables, each timed in one interleaved loop (a round of every contender, repeated; the
median of each), with the same threads on both sides (``torch.set_num_threads(T)``, which
fastxent.torch follows):

1. Loss forward + backward: ``F.cross_entropy(x, y).backward()`` against
   ``fastxent.torch.cross_entropy(x, y).backward()`` on a leaf ``x`` (float32), including
   the allocation of ``x.grad``. At 64x10 also the custom op called directly (what
   ``torch.compile`` runs), which shows what the eager fast path saves.
2. A whole training step (forward, loss, backward, SGD update) with
   ``torch.nn.CrossEntropyLoss`` against ``fastxent.torch.CrossEntropyLoss``: a 10-class
   MLP classifier, and a language-model output layer over a 32k vocabulary.

Run from the repository root after building in place::

    PYTHONPATH=src python bench/torch_autograd.py              # 2 threads
    PYTHONPATH=src python bench/torch_autograd.py --threads 1 --quick

The machine matters: on a shared 2-core machine a busy neighbour slows every multi-threaded
library (OpenMP ones most); the script prints the load average before and after.
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import fastxent.torch as fxt


def timed_rounds(contenders, budget_s, min_rounds, max_rounds):
    """Median seconds of each callable in ``contenders`` (name -> fn), run in interleaved
    rounds (one call of each per round, the order rotated) until ``budget_s`` is spent."""
    times = {name: [] for name in contenders}
    names = list(contenders)
    for name in names:  # warm-up: first-call costs (allocator, lazy imports) are not timed
        contenders[name]()
    start = time.perf_counter()
    r = 0
    while r < max_rounds and (r < min_rounds or time.perf_counter() - start < budget_s):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t0)
        r += 1
    return {name: statistics.median(ts) for name, ts in times.items()}, r


def fmt(seconds):
    ms = seconds * 1e3
    return f"{ms * 1e3:.1f} us" if ms < 1 else f"{ms:.2f} ms"


# -------------------------------------------------------------------- loss fwd+bwd
def loss_contenders(n, c, with_op):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, c, generator=g) * 3).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)

    def step(fn):
        def run():
            x.grad = None
            fn(x, y).backward()
        return run

    out = {"torch": step(F.cross_entropy), "fastxent": step(fxt.cross_entropy)}
    if with_op:  # the custom op itself: torch.compile's path, without the eager fast path
        op = torch.ops.fastxent.cross_entropy
        out["fastxent op"] = step(lambda a, b: op(a, b, None, -100, "mean", 0.0, True)[0])
    return out


# -------------------------------------------------------------------- training steps
def mlp_classifier(batch, features=256, hidden=512, classes=10):
    return (torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, classes)),
            torch.randn(batch, features), torch.randint(0, classes, (batch,)))


def lm_head(tokens, hidden=512, vocab=32000):
    """The output layer of a language model: hidden states -> vocabulary logits."""
    return (torch.nn.Linear(hidden, vocab), torch.randn(tokens, hidden),
            torch.randint(0, vocab, (tokens,)))


def step_contenders(make, *shape):
    out = {}
    for name, criterion in (("torch", torch.nn.CrossEntropyLoss()),
                            ("fastxent", fxt.CrossEntropyLoss())):
        torch.manual_seed(0)  # the same model and data for both
        model, X, Y = make(*shape)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def run(model=model, X=X, Y=Y, opt=opt, criterion=criterion):
            opt.zero_grad(set_to_none=True)
            criterion(model(X), Y).backward()
            opt.step()
        out[name] = run
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="about a second per row")
    ap.add_argument("--budget", type=float, default=None, help="seconds per row (default 4)")
    args = ap.parse_args(argv)
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 4.0)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} thread(s) on both sides "
          f"(torch.set_num_threads; fastxent.torch follows it), {os.cpu_count()} CPUs, "
          f"load average {load:.2f} before the run")

    print("\nloss forward + backward through autograd (float32, mean over N; median time; "
          "speed-up = torch / fastxent)")
    print(f"{'N x C':>14}  {'torch':>10}  {'fastxent':>10}  {'speed-up':>8}  rounds  notes")
    for n, c in ((64, 10), (4096, 1000), (200000, 10), (512, 50257)):
        con = loss_contenders(n, c, with_op=(n, c) == (64, 10))
        med, rounds = timed_rounds(con, budget, 5, 20000)
        note = ""
        if "fastxent op" in med:
            note = f"custom op directly: {fmt(med['fastxent op'])}"
        print(f"{f'{n}x{c}':>14}  {fmt(med['torch']):>10}  {fmt(med['fastxent']):>10}  "
              f"{med['torch'] / med['fastxent']:>7.2f}x  {rounds:>6}  {note}")

    print("\nwhole training step: forward, loss, backward, SGD update (float32; speed-up = "
          "torch / fastxent of the whole step)")
    print(f"{'model':>44}  {'torch':>10}  {'fastxent':>10}  {'speed-up':>8}  rounds")
    for label, make, shape in (
            ("MLP 256-512-512-10, batch 4096", mlp_classifier, (4096,)),
            ("LM head 512 -> 32000 vocab, 512 tokens", lm_head, (512,))):
        med, rounds = timed_rounds(step_contenders(make, *shape), budget, 3, 2000)
        print(f"{label:>44}  {fmt(med['torch']):>10}  {fmt(med['fastxent']):>10}  "
              f"{med['torch'] / med['fastxent']:>7.2f}x  {rounds:>6}")
    print(f"\nload average {os.getloadavg()[0]:.2f} after the run "
          f"(above {os.cpu_count() - args.threads + 1} means other work shared the CPUs)")


if __name__ == "__main__":
    main()
