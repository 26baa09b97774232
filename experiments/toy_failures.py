"""Which addition problems a toy model gets wrong: every problem's mean answer-token loss (the 9,000 training and
1,000 held-out problems alike), the ones over a threshold grouped by their units digits, and the answer digit they
fail on. A model that breaks late in post-training loses whole classes of problems at once (issue J, fourteenth
round in docs/controllers.md: the 100 problems whose units digits sum to exactly 10 with one pair, e.g. 8 + 2, fail
on the tens digit, the carry).

    python experiments/toy_failures.py runs/zoo14/toy_d2/noise_mid_4k_smooth_hold70/seed2/model [MODEL ...]
"""
from __future__ import annotations

import argparse
from collections import Counter


def failures(model_dir: str, threshold: float = 0.1) -> dict:
    """``{"train_ce", "validation_ce", "train_tail", "failing", "classes", "digit"}``: the mean answer loss on each
    split, the mean of the worst 2% of the 9,000 training problems' (the tail ``train.feasible_tail=0.02`` measures on
    512 of them), how many of the 10,000 problems lose more than ``threshold`` nats a digit, their units-digit pairs
    ``(a % 10, b % 10)`` by count, and by count the answer digit (1-5) where each loses most."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax.data import addition
    from sparsejax.train.evaluate import tail_mean

    from toy_edges import run_bos

    m = sj.from_pretrained(model_dir)
    forward = jax.jit(lambda t: sj.forward(m.config, m.params, t, m.gate)[0])
    bos = run_bos(model_dir)
    tokens = addition.all_problems(bos)  # row a * 100 + b is a + b
    logp = np.asarray(jax.nn.log_softmax(forward(jnp.asarray(tokens[:, :-1])), -1))
    nll = -np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0][:, -addition.ANSWER_LEN:]  # [10000, 5]
    per = nll.mean(1)
    held_out = {tuple(r) for r in addition.split("validation", bos).tolist()}
    val = np.array([tuple(r) in held_out for r in tokens.tolist()])
    bad = np.flatnonzero(per > threshold)
    return {"train_ce": float(per[~val].mean()), "validation_ce": float(per[val].mean()),
            "train_tail": tail_mean(per[~val], 0.02), "failing": len(bad),
            "classes": Counter((int(i // 100 % 10), int(i % 100 % 10)) for i in bad).most_common(6),
            "digit": sorted(Counter(int(nll[i].argmax()) + 1 for i in bad).items())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="exported model directories (a run's model/)")
    p.add_argument("--threshold", type=float, default=0.1, help="nats per answer digit that count as failing")
    args = p.parse_args(argv)
    for path in args.models:
        f = failures(path, args.threshold)
        print(f"{path}: mean answer loss train {f['train_ce']:.4f} / held-out {f['validation_ce']:.4f}, worst 2% of "
              f"the training problems {f['train_tail']:.4f}; "
              f"{f['failing']} of 10,000 problems over {args.threshold} nats; units digits (a, b): {f['classes']}; "
              f"answer digit they fail on: {f['digit']}")


if __name__ == "__main__":
    main()
