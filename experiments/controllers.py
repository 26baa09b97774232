"""Side-by-side comparison of the multiplier controllers (issue H): same dense model, same data, several seeds.

    python experiments/controllers.py --task toy --out runs/controllers_toy --seeds 1 2 3
    python experiments/controllers.py --task shakespeare --dense runs/shakespeare/dense --steps 1500 --seeds 1

For each candidate and seed it post-trains the dense model and reads the run's evaluation points: final edge
density, final held-out CE - tau, the worst excursion of held-out CE above tau, the first evaluated step at or
below 5% / 1% density (and, for the toy, greedy autoregressive exact match of the final model on the 1,000
held-out problems). Writes ``results.json`` and ``table.md`` (the table in docs/controllers.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# name -> overrides on top of the task's post-training preset (the preset's own controller is overridden); all on
# the paper's Bernoulli gate, as measured in docs/controllers.md (`--set gate.kind=hard_concrete` for the other)
# the full noise and no lr-following integral unless a candidate says otherwise (the presets now set both)
BERNOULLI = ["gate.kind=bernoulli", "gate.noise_anneal=0", "gate.noise_zero=0", "constraint.pi_ki_follow_lr=false"]
# the toy preset's controller and noise schedule since the eighth round (issue J)
NOISE_MID = [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic", "constraint.pi_ki=0.05",
             "constraint.pi_ki_follow_lr=true", "gate.noise_anneal=0.25", "gate.noise_zero=0.25"]
# toy: the candidates are overrides of the toy preset as it was in rounds 1-14 (2,000 steps, CE memory 0.9,
# proportional gain 2, model/ the last step's), pinned here so that each keeps its meaning now that the preset is
# the fifteenth round's `noise_mid_4k_smooth_tail` with the seventeenth round's bounded gate bias and the nineteenth
# round's density-penalty knee (`noise_mid_4k_smooth_tail_cap_knee3`)
TOY_2K = ["train.steps=2000", "constraint.alpha=0.9", "constraint.pi_kp=2.0", "train.final=last",
          "train.feasible_tail=null", "gate.bias_max=null", "gate.penalty_knee=null"]
# the toy preset of the seventeenth round, spelt out over TOY_2K (the nineteenth round's preset: + the knee)
TAIL_CAP = [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5", "train.final=feasible",
            "train.feasible_tail=0.02", "train.feasible_tail_slack=0.05", "gate.bias_max=3.0"]
CANDIDATES = {
    "geco": [*BERNOULLI, "constraint.method=geco", "constraint.max_log_step=0.02",
             "constraint.max_log_step_down=null"],
    "geco_asym": [*BERNOULLI, "constraint.method=geco", "constraint.max_log_step=0.02",
                  "constraint.max_log_step_down=0.5"],
    "pi": [*BERNOULLI, "constraint.method=pi", "constraint.pi_ki=0.02", "constraint.pi_kp=2.0"],
    "pi_lrdecay": [*BERNOULLI, "constraint.method=pi", "constraint.pi_ki=0.02", "constraint.pi_kp=2.0",
                   "train.schedule=linear", "train.lr_final=0.0"],
    # density-target mode with the target annealed from the starting density (issue H's toy goal)
    "pi_anneal": [*BERNOULLI, "constraint.method=pi", "constraint.sense=density", "constraint.density_target=0.02",
                  "constraint.anneal_steps=1400", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                  "constraint.pi_ki_down=0.5", "train.schedule=linear", "train.lr_final=0.0"],
    # issue J, twelfth round: the same with a short memory for the density (alpha 0.5: the fast-anneal fix of the
    # eleventh round, measured on this slow schedule before it becomes the density presets' default)
    "pi_anneal_a05": [*BERNOULLI, "constraint.method=pi", "constraint.sense=density", "constraint.density_target=0.02",
                      "constraint.anneal_steps=1400", "constraint.alpha=0.5", "constraint.pi_kp=0.5",
                      "constraint.pi_ki_down=0.5", "train.schedule=linear", "train.lr_final=0.0"],
    # issue J, twelfth round: density mode with the CE preset's gate-noise schedule (falls 1 -> 0 over steps
    # 1,000-1,500, then 0), so the last 500 steps train the exported model's gates
    "pi_anneal_noise_mid": [*BERNOULLI, "constraint.method=pi", "constraint.sense=density",
                            "constraint.density_target=0.02", "constraint.anneal_steps=1400", "constraint.alpha=0.98",
                            "constraint.pi_kp=0.5", "constraint.pi_ki_down=0.5", "train.schedule=linear",
                            "train.lr_final=0.0", "gate.noise_anneal=0.25", "gate.noise_zero=0.25"],
    # issue J: the constraint measured on the model that is exported (the deterministic gates)
    "pi_det": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic"],
    "pi_det_ki05": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic", "constraint.pi_ki=0.05"],
    "pi_det_ki05_follow": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic",
                           "constraint.pi_ki=0.05", "constraint.pi_ki_follow_lr=true"],
    # + noise annealing (the seventh round; not the preset): the gate noise's scale falls 1 -> 0
    # over the last 500 / 1,000 of 2,000 steps, or over steps 1,000-1,500 with the last 500 at scale 0 (noise_mid),
    # or over the last quarter of 3,000 steps (noise_3k)
    "pi_det_ki05_follow_noise500": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic",
                                    "constraint.pi_ki=0.05", "constraint.pi_ki_follow_lr=true",
                                    "gate.noise_anneal=0.25"],
    "pi_det_ki05_follow_noise1000": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic",
                                     "constraint.pi_ki=0.05", "constraint.pi_ki_follow_lr=true",
                                     "gate.noise_anneal=0.5"],
    "pi_det_ki05_follow_noise_mid": NOISE_MID,
    "pi_det_ki05_follow_noise_3k": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic",
                                    "constraint.pi_ki=0.05", "constraint.pi_ki_follow_lr=true",
                                    "gate.noise_anneal=0.25", "train.steps=3000"],
    # issue J, tenth round: the preset (noise_mid) on a longer schedule; the fractions keep their meaning (3,000
    # steps: the noise falls over steps 1,500-2,250, the last 750 at scale 0)
    "noise_mid_3k": [*NOISE_MID, "train.steps=3000"],
    # issue J, thirteenth round: the preset on 4,000 steps (noise falls over steps 2,000-3,000, the last 1,000 at 0)
    "noise_mid_4k": [*NOISE_MID, "train.steps=4000"],
    # issue J, thirteenth round: the preset with the multiplier's input and target from the same batch (the
    # measured batch's deterministic-gate CE minus the dense starting model's CE on it, against the slack)
    "noise_mid_batch": [*NOISE_MID, "constraint.tau_data=batch"],
    # issue J, thirteenth round: re-routing faster (twice the preset's lr) on 3,000 steps; and the 4,000-step
    # schedule with a smoother multiplier (a 50-step CE memory, a smaller proportional gain): on the toy the measured
    # batch's CE has a standard deviation of 0.007-0.017 at a flat density, over the 0.005 slack
    "noise_mid_3k_lr2": [*NOISE_MID, "train.steps=3000", "train.lr=2e-3"],
    "noise_mid_4k_smooth": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5"],
    # + the noise back while the CE is over tau (gate.noise_recover: the scale at least the violation / slack),
    # the way back for a run that crosses tau once the annealed noise is 0
    "noise_mid_4k_smooth_recover": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                                    "gate.noise_recover=true"],
    # + an lr that ends at a quarter of its peak instead of 0, so that a late crossing has lr left to be undone
    "noise_mid_4k_smooth_recover_lr25": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98",
                                         "constraint.pi_kp=0.5", "gate.noise_recover=true", "train.lr_final=0.25"],
    "noise_mid_6k_smooth": [*NOISE_MID, "train.steps=6000", "constraint.alpha=0.98", "constraint.pi_kp=0.5"],
    # issue J, fourteenth round: the multiplier stops rising from 70% of the schedule on (noise scale 0.2;
    # constraint.pi_hold_from): were late crossings of tau pushed by a still-growing beta? (measured: they were not)
    "noise_mid_4k_smooth_hold70": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                                   "constraint.pi_hold_from=0.7"],
    # issue J, fourteenth round: the noise falls to a floor (gate.noise_floor) instead of 0 and stays there: at
    # scale 0 the held-out CE moved by the slack at a flat density with beta at its floor (edges at the threshold
    # flip); a small noise keeps a margin around the threshold to the end
    "noise_mid_4k_smooth_floor20": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                                    "gate.noise_floor=0.2"],
    # issue J, fourteenth round: model/ is the last evaluated model meeting CE <= tau on training batches
    # (train.final=feasible; held-out data never decides): a late break no longer becomes the run's output
    "noise_mid_4k_smooth_feasible": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                                     "train.final=feasible"],
    # issue J, fifteenth round: the same, and a model also needs the tail of its per-problem loss on the training
    # batches (the mean CE of the worst 2%) within the dense model's + 0.05 (train.feasible_tail): a model that
    # loses a whole class of problems (exact match 0.988 under tau) moves the mean by ~the slack, its tail by 10-100x
    "noise_mid_4k_smooth_tail": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                                 "train.final=feasible", "train.feasible_tail=0.02", "train.feasible_tail_slack=0.05"],
    # seventeenth round: the gate bias bounded by its start (a needed head cannot escape the penalty upwards)
    "noise_mid_4k_smooth_tail_cap": TAIL_CAP,
    # eighteenth round: the same with the lr ending at a quarter of its peak (the integral gain follows the lr, so
    # beta keeps rising over the last 1,000 steps at noise 0, where the preset's CE sits ~10x under tau; a late break
    # is no longer the output: train.final=feasible)
    "noise_mid_4k_smooth_tail_cap_lr25": [*TAIL_CAP, "train.lr_final=0.25"],
    # nineteenth round: the density penalty's gradient kept at its slope at the knee above it (gate.penalty_knee):
    # open edges the CE does not need, at gate logits of 5-30 where sigmoid' is ~0, keep a price (knee3: the preset)
    "noise_mid_4k_smooth_tail_cap_knee3": [*TAIL_CAP, "gate.penalty_knee=3.0"],
    "noise_mid_4k_smooth_tail_cap_knee0": [*TAIL_CAP, "gate.penalty_knee=0.0"],
    # twenty-fourth round: the integral's fall follows the lr too (a late excursion over tau, one hard batch at noise
    # 0, dropped beta to its floor at the full rate while its regrowth followed the decayed lr: the last 1,000 steps
    # of the AMD EPYC zoo's worst dense model ran at beta ~0.001-0.01 and stayed at 3.2-3.8%)
    "noise_mid_4k_smooth_tail_cap_knee3_downlr": [*TAIL_CAP, "gate.penalty_knee=3.0",
                                                  "constraint.pi_ki_down_follow_lr=true"],
    # the same with a longer noise-free end (noise falls over steps 1,400-2,400, 0 for the last 1,600): at noise 0 the
    # redundant copies of a read, kept as insurance against sampled-closed gates, cost CE no more and can be priced out
    "noise_mid_4k_smooth_tail_cap_knee3_downlr_zero40": [*TAIL_CAP, "gate.penalty_knee=3.0",
                                                         "constraint.pi_ki_down_follow_lr=true", "gate.noise_zero=0.4"],
    # the preset with the noise falling to a floor of 0.2 instead of 0 (fourteenth round's floor, now with the bias
    # bound and the knee): a gate closed late can still be sampled open, so a lost problem has a way back
    "noise_mid_4k_smooth_tail_cap_knee3_floor20": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.noise_floor=0.2"],
    # twenty-fifth round: the late knock-downs of beta, at their source. On toy_d2 (AMD EPYC) the held-out CE sits ~10x
    # under tau for most of the noise-free end, yet beta is at 0.002-0.1 there: each break (a needed edge closed, healed
    # by the CE's own gradient within ~50-100 steps) drops the integral at the full gain for as long as the CE's EMA is
    # over tau, and its regrowth follows the decayed lr. slowfall: the integral falls 5x slower than it rises
    # (constraint.pi_ki_down=0.01; the proportional term still lowers beta at once, by up to exp(-kp))
    "noise_mid_4k_smooth_tail_cap_knee3_slowfall": [*TAIL_CAP, "gate.penalty_knee=3.0", "constraint.pi_ki_down=0.01"],
    # anneal50 / anneal75: the noise starts falling earlier (steps 1,000-3,000 / 0-3,000, then 0 as in the preset): the
    # heads' reads are chosen under less noise, so less of the structure is insurance against sampled-closed gates
    "noise_mid_4k_smooth_tail_cap_knee3_anneal50": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.noise_anneal=0.5"],
    "noise_mid_4k_smooth_tail_cap_knee3_anneal75": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.noise_anneal=0.75"],
    # shared: one noise draw per (batch, query, key) for all heads of a layer (gate.shared_noise): toy_d2 keeps each
    # operand read in two or three layer-0 heads at once, insurance against a sampled-closed gate under independent
    # noise; with a shared draw the copies are sampled closed together and insure nothing, so the penalty prices them
    "noise_mid_4k_smooth_tail_cap_knee3_shared": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.shared_noise=true"],
    "noise_mid_4k_smooth_tail_cap_knee3_shared_anneal75": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.shared_noise=true",
                                                           "gate.noise_anneal=0.75"],
    # shared_nofollow: the same with the integral rising at its full gain to the end (pi_ki_follow_lr off): every
    # toy_d2 run ends with beta knocked to 0.001-0.01 by a late break that healed within 100-200 steps, the held-out
    # CE then ~10x under tau, and the lr-scaled regrowth never brings beta back (train.final=feasible guards the output
    # against the windup the lr-following gain was for)
    "noise_mid_4k_smooth_tail_cap_knee3_shared_nofollow": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.shared_noise=true",
                                                           "constraint.pi_ki_follow_lr=false"],
    # shared_regain: the integral climbs back to the highest level it has reached at the full gain, only new ground
    # follows the lr (constraint.pi_regain): a late break's knock-down is undone once the CE is back under tau
    "noise_mid_4k_smooth_tail_cap_knee3_shared_regain": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.shared_noise=true",
                                                         "constraint.pi_regain=true"],
    # early0: the noise gone almost from the start (1 for steps 0-200, falling over 200-400, 0 for the last 3,600):
    # every run above breaks as the noise reaches 0 at step ~3,000, where the lr is a quarter of its peak and falling
    # and a lost problem is not won back; at noise 0 from step 400 the same crossings come while the lr is high
    "noise_mid_4k_smooth_tail_cap_knee3_early0": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.noise_anneal=0.05",
                                                  "gate.noise_zero=0.9"],
    # clipfirst: each batch's CE clipped to tau +- slack before the multiplier's EMA (constraint.pi_clip_first): on
    # toy_d2 beta sits at its floor while the held-out CE is 10-30x under tau, after single batches at 10-100x tau
    # (a lost problem under the deterministic gates) held the EMA'd error at -1 for the tens of steps it takes to
    # forget them; clipped first, one such batch moves the error by 0.02
    "noise_mid_4k_smooth_tail_cap_knee3_clipfirst": [*TAIL_CAP, "gate.penalty_knee=3.0",
                                                     "constraint.pi_clip_first=true"],
    # twenty-eighth round: the 4,000-step preset on twice the steps, the fractions kept so that the noise falls over
    # steps 3,000-4,000 and the last 4,000 run at noise 0 from twice the lr (a break at noise 0 heals at a higher lr?)
    "noise_mid_8k_smooth_tail_cap_knee3": [*TAIL_CAP, "gate.penalty_knee=3.0", "train.steps=8000",
                                           "gate.noise_anneal=0.125", "gate.noise_zero=0.5"],
    # twenty-eighth round: the density penalty's floor (gate.penalty_floor): every toy_d2 run breaks at noise 0 and
    # stays broken with beta at its floor, because the closed edges sit at gate logits of -6 to -15 (median -6 in
    # layer 0, -8 to -9 in layers 1-3), pushed there by the penalty, where the CE's straight-through gradient
    # sigmoid'(g) is 1e-3 to 1e-6 of its value at 0; with no push under -3 a needed edge would stay within reach
    "noise_mid_4k_smooth_tail_cap_knee3_pfloor3": [*TAIL_CAP, "gate.penalty_knee=3.0", "gate.penalty_floor=-3.0"],
    "noise_mid_4k_smooth_batch": [*NOISE_MID, "train.steps=4000", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                                  "constraint.tau_data=batch"],
    "pi_det_ki05_4k": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic", "constraint.pi_ki=0.05",
                       "train.steps=4000"],
    "pi_det_warm": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic", "train.warmup=200"],
    "pi_det4": [*BERNOULLI, "constraint.method=pi", "constraint.measure=deterministic",
                "constraint.measure_every=4"],
    # tau and the controller's input in the same gate mode: both under the sampled gates of the training loss
    "pi_sampled_tau": [*BERNOULLI, "constraint.method=pi", "constraint.tau_gates=sampled"],
    # a density curriculum with a CE guard: the annealed density target falls only while the deterministic CE of
    # the training batch stays under tau (the task preset's tau: dense + slack)
    "curriculum": [*BERNOULLI, "constraint.method=pi", "constraint.sense=density", "constraint.density_target=0.01",
                   "constraint.anneal_steps=1400", "constraint.alpha=0.98", "constraint.pi_kp=0.5",
                   "constraint.pi_ki_down=0.5", "constraint.guard=true", "constraint.measure=deterministic",
                   "train.schedule=linear", "train.lr_final=0.0"],
}


def summarise(run_dir: Path, tau: float, slack: float | None = None) -> dict:
    """The run's evaluation points against the held-out target: ``tau``, or with ``slack`` the dense model's
    held-out CE (logged at step 0) + slack — the same number when tau is measured on held-out data, the right one
    when it is measured on training batches (``constraint.tau_data=train``, the Shakespeare preset)."""
    from sparsejax.train import RunDir

    run = RunDir(run_dir)
    evals = run.records("eval")  # the start, the periodic and the final evaluations, in file order
    if slack is not None and "dense_eval_ce" in evals[0]:
        tau = evals[0]["dense_eval_ce"] + slack
    final = evals[-1]
    chosen = run.feasible_record()  # train.final=feasible: model/ is that step's model, the run's output
    extra = {}
    if chosen is not None:
        extra = {"selected_step": chosen["step"], "last_density": final["edge_density"],
                 "last_ce_minus_tau": final["eval_ce"] - tau,
                 **{k: chosen[k] for k in ("train_tail_ce", "tail_tau") if k in chosen}}
        final = [r for r in evals if r["step"] == chosen["step"]][-1]
    first = lambda th: next((r["step"] for r in evals if r["edge_density"] <= th), None)
    return {"tau": tau, "final_density": final["edge_density"], "final_ce_minus_tau": final["eval_ce"] - tau,
            # the worst excursion counts evaluations after the gated starting point (step 0)
            "worst_excursion": max(r["eval_ce"] - tau for r in evals if r["step"] > 0), "steps_to_5pct": first(0.05),
            "steps_to_1pct": first(0.01), "final_density_per_layer": final["edge_density_per_layer"], **extra,
            "curve": [(r["step"], r["eval_ce"], r["edge_density"]) for r in evals]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("toy", "shakespeare"), default="toy")
    p.add_argument("--out", default=None)
    p.add_argument("--dense", default=None, help="a dense run directory (its model/ and tokenizer.json); toy: "
                   "pretrained here when missing")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--dense-seed", type=int, default=None, help="toy: pretrain the dense model with train.seed = "
                   "data.seed = this (into OUT/dense unless --dense); default: the preset's seeds")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    p.add_argument("--zoo", nargs="+", default=None, metavar="DIR",
                   help="print the zoo table of these output directories (one dense model each) and exit")
    p.add_argument("--pool", action="store_true", help="with --zoo: one line over every final run instead")
    args = p.parse_args(argv)
    if args.zoo:
        zoo = load_zoo(args.zoo)
        print(pooled(zoo) if args.pool else zoo_table(zoo))
        return
    import jax

    import sparsejax as sj
    from sparsejax.config import load_config
    from sparsejax.data import addition
    from sparsejax.files import atomic_write_text
    from sparsejax.train import RunDir, Trainer

    out = Path(args.out or f"runs/controllers_{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    if args.task == "toy":
        dense = Path(args.dense or out / "dense")
        if not RunDir(dense).model.exists():
            seeds = [] if args.dense_seed is None else [f"train.seed={args.dense_seed}", f"data.seed={args.dense_seed}"]
            Trainer(load_config("toy_addition_pretrain", seeds), dense, progress=False).fit()
        base = ["toy_addition_posttrain", [f"model.checkpoint={RunDir(dense).model}", *TOY_2K]]
    else:
        dense = Path(args.dense or "runs/shakespeare/dense")
        # the candidates were measured before the CE preset bounded the gate bias (eighteenth round) and measured its
        # target on held-aside rows against a control (twenty-sixth): the preset as it was then, without the bound
        preset = Path(__file__).parent.parent / "docs/results/presets/shakespeare_posttrain_until_2026-12-07.yaml"
        base = [str(preset), [f"model.checkpoint={RunDir(dense).model}", f"data.tokenizer={RunDir(dense).tokenizer}",
                              "gate.bias_max=null"]]
    def recorded() -> dict:  # read again before each write: several processes may fill one folder
        return json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}

    results = recorded()
    for name in args.candidates:
        for seed in args.seeds:
            key = f"{name}/seed{seed}"
            if key in results:
                continue
            over = [*base[1], *CANDIDATES[name], f"train.seed={seed}", f"data.seed={seed}", *args.set]
            if args.steps:
                over.append(f"train.steps={args.steps}")
            cfg = load_config(base[0], over)
            run = out / name / f"seed{seed}"
            final = Trainer(cfg, run, progress=False).fit()
            row = summarise(run, final["tau"], cfg.constraint.slack)
            if args.task == "toy":
                def greedy_em(path):
                    m = sj.from_pretrained(path)
                    f = jax.jit(lambda t: sj.forward(m.config, m.params, t, m.gate)[0])
                    return addition.greedy_exact_match(f, addition.split("validation", bool(cfg.data.bos)))

                row["final_greedy_exact_match"] = greedy_em(RunDir(run).model)
            # the run's best_model/ (the sparsest evaluated model with held-out CE <= tau), the alternative export
            best = RunDir(run).best_record()
            if best is not None:
                row["best_model"] = {"step": best.step, "density": best.edge_density,
                                     "ce_minus_tau": best.eval_ce - row["tau"]}
                if args.task == "toy":
                    row["best_model"]["greedy_exact_match"] = greedy_em(RunDir(run).best_model)
            results = {**recorded(), key: row}
            atomic_write_text(out / "results.json", json.dumps(results, indent=1))
            print(key, {k: v for k, v in row.items() if k not in ("curve", "final_density_per_layer")}, flush=True)
    atomic_write_text(out / "table.md", table(results))
    print(table(results))


def load_zoo(dirs) -> dict:
    """``{dense model: {candidate/seed: result}}`` from the ``results.json`` of each directory, named by the
    directory; directories of the same name (one dense model's runs recorded in several rounds' folders) are merged,
    and a run recorded in two of them is an error."""
    zoo = {}
    for d in map(Path, dirs):
        mine = zoo.setdefault(d.name, {})
        for key, result in json.loads((d / "results.json").read_text()).items():
            if key in mine:
                raise SystemExit(f"{key} of {d.name} is recorded twice (in {d} and an earlier directory)")
            mine[key] = result
    return zoo


def pooled(zoo: dict) -> str:
    """One line over every final run of every candidate and dense model: the count, the density's range and
    median, and how many meet the toy goal (<= 2.5% of edges, under tau, exact match >= 0.99)."""
    import numpy as np

    rows = [r for res in zoo.values() for r in res.values()]
    d = np.array([r["final_density"] for r in rows])
    goal = sum(r["final_density"] <= 0.025 and r["final_ce_minus_tau"] <= 0
               and r.get("final_greedy_exact_match", 1.0) >= 0.99 for r in rows)
    names = {k.split("/")[0] for res in zoo.values() for k in res}
    return (f"{len(rows)} final runs of {len(names)} candidates: density {100 * d.min():.2f}-{100 * d.max():.2f}%, "
            f"median {100 * np.median(d):.2f}%; goal met on {goal} of {len(rows)}")


def zoo_table(zoo: dict) -> str:
    """Per candidate: every dense model's final runs in seed order (density, CE - tau, exact match) and the **worst
    case** over the zoo (the largest density, the largest CE - tau, the smallest exact match), with the goal's count."""
    names = sorted({k.split("/")[0] for res in zoo.values() for k in res},
                   key=lambda n: list(CANDIDATES).index(n) if n in CANDIDATES else 99)
    lines = ["| candidate | runs | " + " | ".join(zoo) + " | worst density | worst CE - tau | worst EM | goal met |",
             "|" + "---|" * (len(zoo) + 6)]
    for n, of in [(n, of) for n in names for of in ("final", "best_model")]:
        runs = [[res[k] for k in sorted(res, key=lambda k: k.split("/")[-1]) if k.split("/")[0] == n]
                for res in zoo.values()]  # in seed order (several processes may have filled results.json)
        if of == "best_model":  # the same columns for the runs' best_model/ (records from before it: no line)
            if not any("best_model" in r for mine in runs for r in mine):
                continue
            runs = [[_best_as_final(r) for r in mine] for mine in runs]
        cells, rows = [], []
        for mine in runs:
            rows += mine
            cells.append(" / ".join(f"{100 * r['final_density']:.2f}%"
                                    + (f" ({r['final_greedy_exact_match']:.3f})" if "final_greedy_exact_match" in r else "")
                                    for r in mine) or "-")
        if not rows:
            continue
        em = [r.get("final_greedy_exact_match") for r in rows]
        goal = sum(r["final_density"] <= 0.025 and r["final_ce_minus_tau"] <= 0 and (e is None or e >= 0.99)
                   for r, e in zip(rows, em))
        lines.append(f"| {n}{' best_model/' if of == 'best_model' else ''} | {len(rows)} | " + " | ".join(cells)
                     + f" | {100 * max(r['final_density'] for r in rows):.2f}% | "
                     + f"{max(r['final_ce_minus_tau'] for r in rows):+.4f} | "
                     + (f"{min(e for e in em if e is not None):.3f}" if any(e is not None for e in em) else "-")
                     + f" | {goal}/{len(rows)} |")
    return "\n".join(lines) + "\n"


def _best_as_final(r: dict) -> dict:
    """A run's best_model/ in the final model's keys; a run that never met tau exports none: no model, counted
    as missing the goal (density 100%, CE - tau +inf, EM 0)."""
    b = r.get("best_model")
    if b is None:
        return {"final_density": 1.0, "final_ce_minus_tau": float("inf"), "final_greedy_exact_match": 0.0}
    return {"final_density": b["density"], "final_ce_minus_tau": b["ce_minus_tau"],
            **({"final_greedy_exact_match": b["greedy_exact_match"]} if "greedy_exact_match" in b else {})}


def table(results: dict) -> str:
    names = sorted({k.split("/")[0] for k in results}, key=lambda n: list(CANDIDATES).index(n) if n in CANDIDATES else 99)
    cols = ["final_density", "final_ce_minus_tau", "worst_excursion", "steps_to_5pct", "steps_to_1pct"]
    has_em = any("final_greedy_exact_match" in r for r in results.values())
    head = "| controller | seeds | " + " | ".join(cols) + (" | final greedy EM |" if has_em else " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for n in names:
        rows = [r for k, r in results.items() if k.split("/")[0] == n]
        cell = []
        for c in cols + (["final_greedy_exact_match"] if has_em else []):
            vals = [r[c] for r in rows]
            if c.startswith("steps"):
                cell.append(" / ".join("-" if v is None else str(v) for v in vals))
            else:
                cell.append(f"{np.mean(vals):.4f} ± {np.std(vals):.4f}")
        lines.append(f"| {n} | {len(rows)} | " + " | ".join(cell) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
