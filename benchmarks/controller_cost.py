"""What measuring the constraint on the exported model costs per step (issue J): the library's train step
(``Trainer.step_fn``) with the multiplier's CE taken under the sampled gates of the loss (``constraint.measure=
sampled``, no extra work), under the deterministic gates every step (one more forward), and every 4 steps; and
the step with the gate noise's scale traced (``gate.noise_anneal``, noise annealing) on top of the deterministic
measure, and with the density penalty's knee (``gate.penalty_knee``) on top of both.

    python benchmarks/controller_cost.py                      # the toy model and the Shakespeare LM's shape
    python benchmarks/controller_cost.py --tasks toy --repeats 50

Every variant is built in this process and timed interleaved (round-robin over the variants, ``--repeats`` rounds
of ``--steps`` steps each, after a warm-up), so a busy machine slows all of them alike; the table gives the median
time per step and the ratio against ``sampled``. Fresh random weights (the cost does not depend on their values).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

OFF = ["gate.penalty_knee=null"]  # the variants before the knee are measured without it
VARIANTS = {"sampled": [*OFF], "deterministic": [*OFF, "constraint.measure=deterministic"],
            "deterministic, every 4": [*OFF, "constraint.measure=deterministic", "constraint.measure_every=4"],
            # the scaled-noise gate path (gate.noise_anneal: a traced scale; its value does not change the cost)
            "deterministic + noise annealing": [*OFF, "constraint.measure=deterministic", "gate.noise_anneal=0.25"],
            # + the density penalty's knee (gate.penalty_knee: one more minimum per gate in the backward pass)
            "deterministic + noise annealing + penalty knee": ["constraint.measure=deterministic",
                                                               "gate.noise_anneal=0.25", "gate.penalty_knee=3.0"]}
TASKS = {  # preset, overrides (fresh weights of the preset's shape)
    "toy": ("toy_addition_posttrain", []),
    "shakespeare": ("shakespeare_posttrain", ["data.tokenizer=null"]),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args(argv)
    import jax

    from sparsejax.config import load_config
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer
    from sparsejax.seeds import step_noise

    print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}; median of {args.repeats} rounds x {args.steps} steps")
    print("| task | multiplier's CE | ms / step | x sampled |")
    print("|---|---|---:|---:|")
    for task in args.tasks:
        preset, over = TASKS[task]
        with tempfile.TemporaryDirectory() as tmp:
            runs = {name: Trainer(load_config(preset, over + extra), f"{tmp}/{i}", progress=False)
                    for i, (name, extra) in enumerate(VARIANTS.items())}
            cfg = next(iter(runs.values())).cfg
            batches = [batch_at(next(iter(runs.values())).train_src, s, cfg.data.batch_size, 0)
                       for s in range(args.steps)]

            def go(run, n0):
                for s, b in enumerate(batches):
                    run.state, out = run.step_fn(run.state, run.frozen, b, step_noise(1, n0 + s))
                jax.block_until_ready(out["loss"])

            for run in runs.values():
                go(run, 0)  # compile + warm up
            times = {name: [] for name in runs}
            for r in range(args.repeats):
                for name, run in runs.items():
                    t0 = time.perf_counter()
                    go(run, (r + 1) * args.steps)
                    times[name].append((time.perf_counter() - t0) / args.steps)
        base = statistics.median(times["sampled"])
        for name, ts in times.items():
            m = statistics.median(ts)
            print(f"| {task} | {name} | {1e3 * m:.2f} | {m / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
