"""The pure training core: the step lowers and compiles from shapes alone; eval needs no training state;
logical-axis sharding rules; the learning-rate schedule."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import controllers as sj_controllers, sharding
from sparsejax.config import load_config, model_config
from sparsejax.train import StepSpec, make_eval_step, make_train_step
from sparsejax.train import state as st, step as stp

TINY = ["model.family=llama", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64", "data.batch_size=16",
        "data.eval_batches=2", "train.log_every=1"]


@pytest.mark.parametrize("extra", [[], ["train.lora_rank=2", "train.distill=0.5", "gate.learnable=true"]])
def test_train_step_lowers_from_shape_dtype_structs_alone(extra):
    cfg = load_config("toy_addition_posttrain", TINY + ["constraint.method=pi"] + extra)
    config = model_config(cfg.model)
    shapes = jax.eval_shape(lambda: sj.init_params(config, jax.random.PRNGKey(0)))
    model = sj.Model(config, shapes)  # abstract parameters: nothing allocated
    spec = st.step_spec(cfg, model)
    L, H = config.n_layers, config.n_heads
    trainable = {"params": shapes} if spec.lora_alpha is None else jax.eval_shape(
        lambda p: {"lora": __import__("sparsejax.lora", fromlist=["x"]).init_lora(
            p, cfg.train.lora_modules, cfg.train.lora_rank, jax.random.PRNGKey(1))}, shapes)
    bias = jax.ShapeDtypeStruct((L, H), jnp.float32)
    frozen = {}
    if cfg.gate.learnable:
        trainable["gate_bias"] = bias
    else:
        frozen["gate_bias"] = bias
    if spec.lora_alpha is not None:
        frozen["base"] = shapes
    if spec.distill:
        frozen["teacher"] = shapes
    optimizer, multiplier = stp.make_optimizer(cfg), stp.make_multiplier(cfg, 0.05)
    state = st.abstract_state(trainable, optimizer, multiplier)
    batch = {"tokens": jax.ShapeDtypeStruct((16, 11), jnp.int32), "mask": jax.ShapeDtypeStruct((16, 10), jnp.float32)}
    seed = jax.ShapeDtypeStruct((), jnp.uint32)
    step = jax.jit(make_train_step(spec, optimizer, multiplier), donate_argnums=0)
    compiled = step.lower(state, frozen, batch, seed).compile()
    mem = compiled.memory_analysis()
    assert mem.argument_size_in_bytes > 0 and mem.temp_size_in_bytes > 0
    flops = compiled.cost_analysis()
    flops = flops[0] if isinstance(flops, list) else flops
    assert flops["flops"] > 0
    # and the eval step
    jax.jit(make_eval_step(spec)).lower(trainable, frozen, batch).compile()


def test_eval_command_builds_no_training_state(tmp_path, monkeypatch, capsys):
    from sparsejax import cli
    from sparsejax.train import Trainer

    cfg = load_config("toy_addition_posttrain", TINY)
    config = model_config(cfg.model)
    model = sj.Model(config, sj.init_params(config, jax.random.PRNGKey(0)), sj.make_gate(1.0, shape=(2, 4)))
    sj.save_pretrained(model, tmp_path / "m")

    def forbidden(*a, **k):
        raise AssertionError("eval must not build a training state")

    monkeypatch.setattr(Trainer, "__init__", forbidden)
    monkeypatch.setattr(st, "init_state", forbidden)
    assert cli.main(["eval", "toy_addition_posttrain", str(tmp_path / "m"), *TINY]) == 0
    out = json.loads(capsys.readouterr().out)
    # independent check: the deterministic edge density from the materialised gates of the same batches
    from sparsejax.data import addition, batch_at

    src = addition.source("validation")
    kept, total = 0, 0
    for i in range(2):
        tokens = batch_at(src, i, 16, seed=0)["tokens"][:, :-1]
        _, aux = sj.forward(config, model.params, tokens, model.gate, capture="attn.hook_adjacency")
        for l in range(2):
            adj = np.asarray(aux["captures"][f"blocks.{l}.attn.hook_adjacency"])
            causal = np.tril(np.ones(adj.shape[-2:], bool))
            kept, total = kept + adj[..., causal].sum(), total + adj[..., causal].size
    assert out["gated"] and out["edge_density"] == pytest.approx(kept / total, abs=1e-12)
    # --split aside: the rows a post-training holds aside, which the config must name (a one-line error if not)
    assert cli.main(["eval", "toy_addition_posttrain", str(tmp_path / "m"), *TINY, "--split", "aside"]) == 2
    assert "data.aside is 0" in capsys.readouterr().err
    assert cli.main(["eval", "toy_addition_pretrain", str(tmp_path / "m"), *TINY, "data.aside=0.25",
                     "--split", "aside"]) == 0
    aside = json.loads(capsys.readouterr().out)
    assert aside["gated"] and aside["eval_ce"] != pytest.approx(out["eval_ce"], rel=1e-4)


def test_logical_axis_rules():
    mesh = jax.make_mesh((1, 1, 1), sharding.AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
    assert sharding.param_axes("layers/attn/q/kernel") == ("layers", "embed", "heads")
    assert sharding.param_axes("layers/attn/o/kernel") == ("layers", "heads", "embed")
    rules = sharding.parse_rules(["embed=", "mlp=fsdp+tensor"])
    table = dict(rules)
    assert table["embed"] == () and table["mlp"] == ("fsdp", "tensor") and table["heads"] == ("tensor",)
    spec = sharding.logical_spec(("layers", "embed", "mlp"), (2, 32, 64), mesh, rules)
    assert spec == jax.sharding.PartitionSpec(None, None, ("fsdp", "tensor"))
    with pytest.raises(ValueError, match="unknown logical axis 'emb'"):
        sharding.parse_rules(["emb=fsdp"])
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        sharding.parse_rules(["embed=model"])
    # every parameter of every family has logical axes of its rank
    for family in sj.models.FAMILIES:
        c = sj.ModelConfig(family, vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_position=8)
        shapes = jax.eval_shape(lambda: sj.init_params(c, jax.random.PRNGKey(0)))
        for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
            name = "/".join(str(k.key) for k in path)
            axes = sharding.param_axes(name)
            assert axes is not None and len(axes) == len(leaf.shape), (family, name)


def test_learning_rate_schedules():
    f = stp.lr_schedule(1.0, 10, 110, "linear", 0.0)
    assert float(f(0)) == 0.0 and float(f(10)) == pytest.approx(1.0) and float(f(60)) == pytest.approx(0.5)
    assert float(f(110)) == pytest.approx(0.0)
    g = stp.lr_schedule(2.0, 0, 100, "cosine", 0.1)
    assert float(g(0)) == pytest.approx(2.0) and float(g(100)) == pytest.approx(0.2)
    assert float(g(50)) == pytest.approx(0.2 + 1.8 * 0.5)
    assert float(stp.lr_schedule(3.0, 0, 100, "constant", 0.1)(77)) == 3.0
    with pytest.raises(ValueError, match="train.schedule"):
        stp.lr_schedule(1.0, 0, 10, "step", 0.1)


def test_density_target_mode_on_the_toy(tmp_path):
    """minimise CE s.t. density <= target: beta rises every step while the density is above a low target (at the
    integral's rate; kp=0 here) and falls while it is below a high one."""
    from sparsejax.train import Trainer

    pre = load_config("toy_addition_pretrain", TINY + ["train.steps=5"])
    Trainer(pre, tmp_path / "dense", progress=False).fit()
    common = TINY + [f"model.checkpoint={tmp_path / 'dense' / 'model'}", "train.steps=8", "constraint.method=pi",
                     "constraint.sense=density", "constraint.beta_init=0.01", "constraint.pi_ki=0.05",
                     "constraint.pi_kp=0.0", "constraint.alpha=0.0", "gate.kind=bernoulli", "gate.bias=0.0"]
    betas = {}
    for target in (0.05, 0.95):
        run = tmp_path / f"t{target}"
        Trainer(load_config("toy_addition_posttrain", common + [f"constraint.density_target={target}"]), run,
                progress=False).fit()
        recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in recs if "ce" in r]
        assert all(r["density_target"] == pytest.approx(target) and "tau" not in r for r in train)
        betas[target] = [r["beta"] for r in train]
        dens = [r["train_edge_density"] for r in train]
        assert all(0.05 < d < 0.95 for d in dens)  # the premise of the two cases
    lo, hi = betas[0.05], betas[0.95]
    assert all(b2 > b1 for b1, b2 in zip(lo, lo[1:]))  # violated: rising
    assert all(b2 < b1 for b1, b2 in zip(hi, hi[1:]))  # satisfied: falling
    with pytest.raises(ValueError, match="density_target=1.5 must be a share in"):
        Trainer(load_config("toy_addition_posttrain", common[:-1] + ["constraint.density_target=1.5"]),
                tmp_path / "bad", progress=False)
    # annealed: the target starts at the gated model's measured held-out density and falls geometrically to 0.05
    # over 4 steps (logged after each step k = 1..8: start * (0.05 / start) ** min(k - 1, 4) / 4)
    run = tmp_path / "anneal"
    trainer = Trainer(load_config("toy_addition_posttrain", common + ["constraint.density_target=0.05",
                                                                      "constraint.anneal_steps=4"]), run,
                      progress=False)
    start = trainer.evaluate()["edge_density"]
    assert trainer.target_start == pytest.approx(start) and start > 0.05
    trainer.fit()
    train = [r for r in (json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()) if "ce" in r]
    want = [start * (0.05 / start) ** (min(k, 4) / 4) for k in range(8)]
    np.testing.assert_allclose([r["density_target"] for r in train], want, rtol=1e-5)
    with pytest.raises(ValueError, match="anneal_from=0.01 must be above constraint.density_target=0.05"):
        load_config("toy_addition_posttrain", common + ["constraint.density_target=0.05", "constraint.anneal_steps=4",
                                                        "constraint.anneal_from=0.01"])
    with pytest.raises(ValueError, match="CE-target mode needs constraint.anneal_from"):
        load_config("toy_addition_posttrain", ["constraint.anneal_steps=4"])


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", r"train.lr=-1.0 must be a number > 0"), ("train.steps=-5", "train.steps=-5 must be"),
    ("gate.bias=.nan", "gate.bias=nan must be a finite number"), ("data.batch_size=0", "data.batch_size=0 must"),
    ("train.log_every=0", "train.log_every=0 must"), ("constraint.alpha=1.0", "constraint.alpha=1.0 must"),
    ("constraint.density_target=2", "density_target=2.0 must be a share"),
    ("train.warmup=-1", "train.warmup=-1 must"), ("gate.per=row", "gate.per='row' must be model, layer or head"),
    ("gate.learnable=false gate.bias_lr=0.03",
     "gate.bias_lr=0.03 has no effect while gate.learnable=false: set gate.learnable=true"),
    ("data.repeat=0.5", "applies to text data only: set data.repeat=0"),
    ("data.repeat=1.5", "data.repeat=1.5 must be a share in"),
    ("data.repeat_tokens=noise", "data.repeat_tokens='noise' must be text or random"),
    ("data.bos=true data.kind=text data.path=shakespeare data.repeat=0.5", "is built for data.backend=array without"),
    ("data.bos=true data.backend=tfds", "is built for data.backend=array without repeated passages"),
    ("constraint.method=geco constraint.pi_ki_follow_lr=true", "pi_ki_follow_lr works with constraint.method=pi"),
    ("gate.noise_anneal=-1", "gate.noise_anneal=-1.0 must be a share of train.steps"),
    ("gate.noise_anneal=1.5", "gate.noise_anneal=1.5 must be a share of train.steps"),
    ("gate.noise_anneal=0.6 gate.noise_zero=0.5", "is more than the whole run"),
    ("gate.noise_anneal=0 gate.noise_zero=0.2", "gate.noise_zero=0.2 needs gate.noise_anneal > 0"),
    ("gate.noise_anneal=0 gate.noise_zero=0 gate.noise_floor=0.2", "gate.noise_floor=0.2 needs gate.noise_anneal > 0"),
    ("gate.noise_floor=1", "gate.noise_floor=1.0 must be a noise scale"),
    ("gate.noise_anneal=0.5 train.attention=pallas", "set train.attention=chunked"),
    ("gate.noise_recover=true gate.noise_anneal=0", "gate.noise_recover=true raises an annealed noise"),
    ("gate.noise_recover=true constraint.method=penalty constraint.pi_ki_follow_lr=false",
     "a controller with a target"),
])
def test_invalid_values_are_refused_before_anything_runs(override, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*")):
        load_config("toy_addition_posttrain", ["train.steps=100", *override.split()])
    from sparsejax import cli
    run = tmp_path / "run"
    assert cli.main(["posttrain", "toy_addition_posttrain", str(run), "train.steps=100", *override.split()]) == 2
    assert not run.exists()


def test_resume_refuses_a_changed_trajectory_and_logs_each_step_once(tmp_path, capsys):
    from sparsejax.train import Trainer

    run = tmp_path / "run"
    base = TINY + ["train.checkpoint_every=3"]
    Trainer(load_config("toy_addition_pretrain", base + ["train.steps=6"]), run, progress=False).fit()
    # a run saved before a config key existed resumes when the key keeps its default (an upgrade is no config change)
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["constraint"]["anneal_steps"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ValueError, match=r"train.lr: 0.003 -> 0.001.*only train.steps"):
        Trainer(load_config("toy_addition_pretrain", base + ["train.steps=9", "train.lr=1e-3"]), run, progress=False)
    Trainer(load_config("toy_addition_pretrain", base + ["train.steps=9"]), run, progress=False).fit()
    assert "resumed" in capsys.readouterr().out
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()
             if "ce" in json.loads(l)]
    assert steps == list(range(1, 10))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        Trainer(load_config("toy_addition_pretrain", TINY), tmp_path / "file", progress=False)


def test_cli_config_listing_and_overrides_after_flags(capsys):
    from sparsejax import cli

    assert cli.main(["config", "toy_addition_posttrain", "train.steps=7", "constraint.method=pi"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "method: pi" in out and "pi_ki:" in out
    parser = cli.build_parser()
    args, extra = parser.parse_known_args(["posttrain", "p", "d", "a.b=1", "--no-progress", "c.d=2"])
    assert args.no_progress and extra == ["c.d=2"]
    with pytest.raises(SystemExit):
        cli.main(["config", "toy_addition_posttrain", "--bogus"])


def test_cli_config_keys_lists_every_key_with_its_type_and_rule(capsys):
    """``sparsejax config P --keys``: one line per key of the run config (the dataclasses), its type, its value
    after the overrides and what validate requires of it."""
    from sparsejax import cli
    from sparsejax.config import to_dict

    assert cli.main(["config", "toy_addition_posttrain", "--keys", "train.steps=7"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    keys = [line.split()[0] for line in lines]
    assert keys == [f"{s}.{k}" for s, sec in to_dict(load_config("toy_addition_posttrain")).items() for k in sec]
    row = dict(zip(keys, lines))
    assert row["train.steps"].split()[1:4] == ["int", "7", "an"] and row["train.steps"].endswith("an integer >= 0")
    assert row["train.attention"].endswith("auto, chunked, pallas or reference")
    assert "a registered controller: " in row["constraint.method"] and "pi" in row["constraint.method"]


def test_model_inputs_are_checked_where_concrete():
    c = sj.ModelConfig("llama", vocab_size=10, d_model=16, n_layers=1, n_heads=2, d_ff=16, max_position=8)
    p = sj.init_params(c, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\).*\[1, 12\]"):
        sj.forward(c, p, np.array([[1, 12]]))
    with pytest.raises(ValueError, match="at least one token"):
        sj.forward(c, p, np.zeros((1, 0), np.int32))
    assert jax.jit(lambda t: sj.forward(c, p, t)[0])(np.array([[1, 2]])).shape == (1, 2, 10)


def test_gate_bias_has_its_own_learning_rate():
    cfg = load_config("toy_addition_posttrain", TINY + ["gate.learnable=true", "gate.bias_lr=0.5", "train.lr=1e-3",
                                                        "train.schedule=constant", "train.grad_clip=1e9"])
    opt = stp.make_optimizer(cfg)
    params = {"params": {"w": jnp.ones(3)}, "gate_bias": jnp.ones((2, 4))}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    # Adam's first step moves every parameter by (about) its learning rate
    np.testing.assert_allclose(np.asarray(updates["gate_bias"]), -0.5, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(updates["params"]["w"]), -1e-3 * (1 + 0.0), rtol=2e-2)


def test_gate_bias_max_bounds_the_learnt_bias_from_above(tmp_path):
    """gate.bias_max=c: the learnt bias ends each update at min(bias + Adam's update, c) — a bias pushed up stops at
    c, one under it moves freely, one above it returns to c — and the other parameters' updates are Adam's."""
    over = TINY + ["gate.learnable=true", "gate.bias_lr=0.5", "train.lr=1e-3", "train.schedule=constant",
                   "train.grad_clip=1e9"]
    opt = stp.make_optimizer(load_config("toy_addition_posttrain", over + ["gate.bias_max=0.2"]))
    params = {"params": {"w": jnp.ones(3)}, "gate_bias": jnp.array([0.0, -2.0, 1.0, 0.1])}
    grads = {"params": {"w": jnp.ones(3)}, "gate_bias": jnp.array([-1.0, -1.0, 1.0, 1.0])}  # up, up, down, down
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(new["gate_bias"]), [0.2, -1.5, 0.2, -0.4], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(new["params"]["w"]), 1 - 1e-3, rtol=1e-5)
    # in a run: the logged gate_bias_max is the largest learnt bias, never above the bound
    from sparsejax.train import Trainer
    cfg = load_config("toy_addition_posttrain", TINY + ["train.steps=3", "gate.bias=0.5", "gate.bias_max=0.5",
                                                        "train.final=last", "train.eval_every=0"])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    run.fit()
    logged = [r.extra["gate_bias_max"] for r in run.dir.records("train")]
    assert logged and max(logged) <= 0.5 + 1e-6
    assert float(run.state["trainable"]["gate_bias"].max()) == pytest.approx(logged[-1])
    with pytest.raises(ValueError, match="gate.bias_max=1.0 bounds a learnt gate bias"):
        load_config("toy_addition_posttrain", ["gate.learnable=false", "gate.bias_lr=null", "gate.bias_max=1.0"])


@pytest.mark.parametrize("every", [1, 3])
def test_deterministic_measure_is_the_exported_models_ce(tmp_path, every):
    """constraint.measure=deterministic: the multiplier's input is the training batch's CE under the eval-mode gates
    (checked against the held-out evaluation's own step on that batch, before the update), measured every
    ``every`` steps and held between; the sampled-gate CE of the loss differs from it."""
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer

    cfg = load_config("toy_addition_posttrain", TINY + ["constraint.method=pi", "constraint.measure=deterministic",
                                                        f"constraint.measure_every={every}", "gate.bias=0.5"])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    assert ("probe_ce" in run.state) == (every > 1)
    eval_step = jax.jit(make_eval_step(run.spec))
    held = None
    for step in range(4):
        batch = batch_at(run.train_src, step, cfg.data.batch_size, cfg.data.seed)
        before = jax.tree.map(jnp.copy, run.state["trainable"])
        want = float(eval_step(before, run.frozen, batch)["ce"])
        run.state, out = run.step_fn(run.state, run.frozen, batch, jnp.uint32(step))
        if step % every == 0:
            held = want
            np.testing.assert_allclose(float(out["measured_ce"]), want, rtol=1e-5)
            assert abs(float(out["ce"]) - want) > 1e-4  # the sampled gates' CE is another number
        else:
            np.testing.assert_allclose(float(out["measured_ce"]), held, rtol=1e-5)
        if step == 0:  # the controller's EMA starts at its first input
            np.testing.assert_allclose(float(out["ce_ema"]), want, rtol=1e-5)


@pytest.mark.parametrize("extra,every", [([], 1), (["train.lora_rank=2"], 3), (["train.distill=1.0"], 2)])
def test_batch_tau_measures_the_gap_to_the_dense_starting_model_on_each_batch(tmp_path, extra, every):
    """constraint.tau_data=batch: the multiplier's input is the training batch's CE under the exported gates minus
    the dense starting model's CE on the same batch (both from the evaluation step, the dense one on the parameters
    the run started from), its target the slack; the run's tau (records, best_model/) stays the dense held-out CE +
    slack. With distillation the reference is the teacher's CE from the loss's own forward, the same number."""
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer

    cfg = load_config("toy_addition_posttrain", TINY + extra + [
        "constraint.method=pi", "constraint.tau_data=batch", "constraint.slack=0.02",
        f"constraint.measure_every={every}", "gate.bias=0.5", "train.lr=1e-2"])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    assert ("teacher" in run.frozen) == ("train.lora_rank=2" not in extra)  # under LoRA: the frozen base
    gated, dense = jax.jit(make_eval_step(run.spec)), jax.jit(make_eval_step(run.spec, dense=True))
    start = jax.tree.map(jnp.copy, run.state["trainable"])
    np.testing.assert_allclose(run.tau, run.evaluate(start, dense=True)["eval_ce"] + 0.02, rtol=1e-6)
    held = None
    for step in range(4):
        batch = batch_at(run.train_src, step, cfg.data.batch_size, cfg.data.seed)
        before = jax.tree.map(jnp.copy, run.state["trainable"])
        want = float(gated(before, run.frozen, batch)["ce"]) - float(dense(start, run.frozen, batch)["ce"])
        run.state, out = run.step_fn(run.state, run.frozen, batch, jnp.uint32(step))
        if step % every == 0:
            held = want
            np.testing.assert_allclose(float(out["measured_ce"]), want, rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_allclose(float(out["measured_ce"]), held, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(float(out["tau"]), 0.02)
    # the parameters moved, the reference did not: the dense model of the last step is another number
    assert abs(float(dense(run.state["trainable"], run.frozen, batch)["ce"])
               - float(dense(start, run.frozen, batch)["ce"])) > 1e-4


def test_control_tau_trains_a_dense_control_in_step_and_measures_the_gap_to_it(tmp_path, monkeypatch):
    """constraint.tau_data=control: a dense control trained beside the sparse model is, at every evaluation, the
    model a separate dense run (gates off, no constraint, same seed, data, optimiser and schedule) has reached: its
    held-out CE in the records is that run's, and control_model/ holds that run's weights; each step's multiplier
    input is the batch's CE under the exported gates minus the control's CE on it, both before the step's update
    (from the evaluation step), against the slack."""
    from sparsejax.data import batch_at
    from sparsejax.train import RunDir, Trainer

    common = [*TINY, "model.checkpoint=null", "train.steps=4", "train.eval_every=2", "train.lr=1e-2",
              "train.final=last"]
    sparse = [*common, "gate.bias=0.5", "constraint.method=pi", "constraint.tau_data=control",
              "constraint.slack=0.02"]
    dense_cfg = load_config("toy_addition_posttrain", [*common, "gate.enabled=false", "constraint.method=none",
                                                     "constraint.pi_ki_follow_lr=false"])
    Trainer(dense_cfg, tmp_path / "dense", progress=False).fit()
    Trainer(load_config("toy_addition_posttrain", sparse), tmp_path / "sparse", progress=False).fit()
    want = {r.step: r.eval_ce for r in RunDir(tmp_path / "dense").records("eval")}
    got = {r.step: r["control_eval_ce"] for r in RunDir(tmp_path / "sparse").records("eval") if r.step > 0}
    assert sorted(got) == [2, 4]
    np.testing.assert_allclose([got[2], got[4]], [want[2], want[4]], rtol=1e-5)
    # each evaluation's held-out target is the control's CE + the slack: best_model/ and the missed-target notice
    # compare with it, not with the starting dense model's
    for r in RunDir(tmp_path / "sparse").records("eval"):
        if r.step > 0:
            assert r["eval_tau"] == pytest.approx(r["control_eval_ce"] + 0.02)
    from sparsejax.train.checkpointing import overshoot

    assert overshoot({"eval_ce": 3.0, "eval_tau": 3.05}, 2.0) == pytest.approx(-0.05)
    assert overshoot({"eval_ce": 3.0}, 2.0) == pytest.approx(1.0)
    assert abs(want[4] - want[2]) > 1e-3  # the control trained: another CE at each evaluation
    a, b = sj.from_pretrained(tmp_path / "dense" / "model"), sj.from_pretrained(tmp_path / "sparse" / "control_model")
    assert b.gate is None
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)
    from sparsejax import cli  # the CLI's notice: the control's start and end on held-out data, the final gap

    start = RunDir(tmp_path / "sparse").records("start")[0]["dense_eval_ce"]
    final = RunDir(tmp_path / "sparse").records("final")[-1].eval_ce
    notice = cli.control_notice(tmp_path / "sparse")
    said = re.search(r"CE (\S+) at the start, (\S+) at the end .*the final model \S+, (\S+) over it", notice)
    # the control's end and the gap against the separate dense run's CE (equal to rtol 1e-5, so not to the 4th digit)
    np.testing.assert_allclose([float(x) for x in said.groups()], [start, want[4], final - want[4]], atol=2e-4)
    for bound, learning in ((start - want[4] - 1e-3, True), (start - want[4] + 1e-3, False)):
        monkeypatch.setattr(cli, "CONTROL_GAIN_NOTE", bound)  # the control gained more / less than the bound
        assert ("still learning" in cli.control_notice(tmp_path / "sparse")) == learning
    assert cli.control_notice(tmp_path / "dense") is None  # no control beside it: no notice
    from sparsejax import report  # the dynamics figure of such a run: the gap on its own axis, the control's CE

    (tmp_path / "sparse" / "feasible.json").write_text('{"step": 2}')  # and a rolled-back model/ marked
    assert report.plot_dynamics(tmp_path / "sparse", tmp_path / "dyn.png").read_bytes()[:4] == b"\x89PNG"

    run = Trainer(load_config("toy_addition_posttrain", sparse), tmp_path / "steps", progress=False)
    gated, dense = jax.jit(make_eval_step(run.spec)), jax.jit(make_eval_step(run.spec, dense=True))
    for step in range(3):
        batch = batch_at(run.train_src, step, run.cfg.data.batch_size, run.cfg.data.seed)
        before = jax.tree.map(jnp.copy, run.state["trainable"])
        control = {"params": jax.tree.map(jnp.copy, run.state["control"]["params"])}
        ref = float(dense(control, run.frozen, batch)["ce"])
        gap = float(gated(before, run.frozen, batch)["ce"]) - ref
        run.state, out = run.step_fn(run.state, run.frozen, batch, jnp.uint32(step))
        np.testing.assert_allclose(float(out["control_ce"]), ref, rtol=1e-5)
        np.testing.assert_allclose(float(out["measured_ce"]), gap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(float(out["tau"]), 0.02)
    for bad in ("train.lora_rank=2", "train.distill=1.0"):
        with pytest.raises(ValueError, match="constraint.tau_data=control trains a dense control"):
            load_config("toy_addition_posttrain", [*sparse, bad])


@pytest.mark.parametrize("data,guarded", [("control", False), ("batch", False), ("control", True)])
def test_aside_rows_are_never_trained_on_and_carry_the_measured_gap(tmp_path, data, guarded):
    """data.aside: the last share of the training rows is held aside — the training stream draws from the rest only —
    and the multiplier's input (CE mode) or the guard of a guarded density curriculum is the CE gap measured on the
    step's held-aside rows: the exported gates' CE there minus the control's (tau_data=control, before its update)
    or the dense starting model's (tau_data=batch), both from the evaluation step. Refused where nothing would
    measure on them."""
    from sparsejax.data import addition, batch_at, hold_aside
    from sparsejax.train import Trainer
    from sparsejax.train.loop import train_rows

    full = addition.source("train")
    rest, aside = hold_aside(full, 0.1)
    assert (len(rest), len(aside)) == (8100, 900)
    np.testing.assert_array_equal(aside.rows([0, 899])["tokens"], full.rows([8100, 8999])["tokens"])
    cfg = load_config("toy_addition_posttrain", [*TINY, "model.checkpoint=null", "gate.bias=0.5", "train.lr=1e-2",
                                                 "constraint.method=pi", f"constraint.tau_data={data}",
                                                 "constraint.slack=0.02", "data.aside=0.1",
                                                 *(["constraint.sense=density", "constraint.density_target=0.05",
                                                    "constraint.anneal_steps=4", "constraint.guard=true"]
                                                   if guarded else [])])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    assert run.spec.guard == guarded and run.spec.aside
    assert len(run.train_src) == 8100 and len(run.aside_src) == 900
    gated, dense = jax.jit(make_eval_step(run.spec)), jax.jit(make_eval_step(run.spec, dense=True))
    start = {"params": jax.tree.map(jnp.copy, run.state["trainable"]["params"])}
    aside_rows = {tuple(r) for r in full.rows(np.arange(8100, 9000))["tokens"].tolist()}
    for step in range(3):
        batch = train_rows(run, step)
        assert not aside_rows & {tuple(r) for r in np.asarray(batch["tokens"]).tolist()}  # never trained on
        held = {"tokens": batch["aside_tokens"], "mask": batch["aside_mask"]}
        np.testing.assert_array_equal(held["tokens"], batch_at(run.aside_src, step, 16, cfg.data.seed)["tokens"])
        reference = {"params": run.state["control"]["params"]} if data == "control" else start
        gap = (float(gated(jax.tree.map(jnp.copy, run.state["trainable"]), run.frozen, held)["ce"])
               - float(dense(jax.tree.map(jnp.copy, reference), run.frozen, held)["ce"]))
        run.state, out = run.step_fn(run.state, run.frozen, batch, jnp.uint32(step))
        np.testing.assert_allclose(float(out["measured_ce"]), gap, rtol=1e-4, atol=1e-6)
        if guarded:  # the guard's EMA (alpha of the preset) starts at the first measured gap, its target the slack
            np.testing.assert_allclose(float(run.state["mult_state"].guard_ema), gap if step == 0 else
                                       cfg.constraint.alpha * ema + (1 - cfg.constraint.alpha) * gap, rtol=1e-4,
                                       atol=1e-6)
            ema = float(run.state["mult_state"].guard_ema)
    with pytest.raises(ValueError, match="data.aside=0.1 holds training rows aside"):
        load_config("toy_addition_posttrain", [*TINY, "data.aside=0.1"])
    with pytest.raises(ValueError, match="data.aside=0.1 holds training rows aside"):  # density mode, no guard
        load_config("toy_addition_posttrain", [*TINY, "data.aside=0.1", "constraint.tau_data=control",
                                               "constraint.slack=0.02", "constraint.sense=density",
                                               "constraint.density_target=0.05"])
    with pytest.raises(ValueError, match="leaves none to train on"):
        hold_aside(rest, 1.0)


def test_a_dense_run_only_leaves_the_held_aside_rows_out(tmp_path):
    """data.aside in a dense run (pretraining): the rows are never trained on, and nothing is measured on them — so
    that a model pretrained so has not memorised the rows its post-training measures the CE gap on."""
    from sparsejax.data import addition
    from sparsejax.train import Trainer
    from sparsejax.train.loop import train_rows

    aside_rows = {tuple(r) for r in addition.source("train").rows(np.arange(8100, 9000))["tokens"].tolist()}
    dense_run = Trainer(load_config("toy_addition_posttrain", [*TINY, "model.checkpoint=null", "gate.enabled=false",
                                                               "constraint.method=none", "data.aside=0.1",
                                                               "constraint.pi_ki_follow_lr=false", "train.final=last"]),
                        tmp_path / "dense", progress=False)
    assert len(dense_run.train_src) == 8100 and dense_run.aside_src is None
    for step in range(3):
        batch = train_rows(dense_run, step)
        assert set(batch) == {"tokens", "mask"}
        assert not aside_rows & {tuple(r) for r in np.asarray(batch["tokens"]).tolist()}


def test_batch_tau_with_every_edge_kept_measures_no_gap(tmp_path):
    """Gates that keep every edge give the dense model's attention: the measured gap is 0 (float32)."""
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer

    cfg = load_config("toy_addition_posttrain", TINY + ["constraint.method=pi", "constraint.tau_data=batch",
                                                        "gate.bias=50.0"])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    batch = batch_at(run.train_src, 0, cfg.data.batch_size, cfg.data.seed)
    _, out = run.step_fn(run.state, run.frozen, batch, jnp.uint32(0))
    assert abs(float(out["measured_ce"])) < 1e-5


@pytest.mark.parametrize("data", ["batch", "control"])
def test_an_annealed_gap_target_falls_from_anneal_from_to_the_slack(tmp_path, data):
    """constraint.tau_data=batch / control with constraint.anneal_steps: the multiplier's target, the CE gap to the
    dense model / control, falls geometrically from anneal_from to the slack (the record after step k = 1..8 holds
    the target of update k - 1: 0.2 * (0.02 / 0.2) ** (min(k - 1, 4) / 4)), then stays at the slack."""
    from sparsejax.train import RunDir, Trainer

    cfg = load_config("toy_addition_posttrain", [*TINY, "model.checkpoint=null", "train.steps=8", "train.eval_every=4",
                                                 "gate.bias=0.5", "constraint.method=pi", f"constraint.tau_data={data}",
                                                 "constraint.slack=0.02", "constraint.anneal_steps=4",
                                                 "constraint.anneal_from=0.2", "train.final=last"])
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    train = [r for r in RunDir(tmp_path / "run").records("train")]
    assert [r.step for r in train] == list(range(1, 9))
    want = [0.2 * 0.1 ** (min(k - 1, 4) / 4) for k in range(1, 9)]
    np.testing.assert_allclose([r["tau"] for r in train], want, rtol=1e-5)


@pytest.mark.parametrize("override,problem", [("constraint.tau=1.0", "drop one of the two"),
                                              ("constraint.tau_gates=sampled", "constraint.tau_gates=dense"),
                                              ("constraint.anneal_steps=10 constraint.anneal_from=0.001",
                                               "must be above constraint.slack"),
                                              ("constraint.slack=0.0", "must be > 0")])
@pytest.mark.parametrize("data", ["batch", "control"])
def test_batch_tau_refuses_what_contradicts_it(override, problem, data):
    with pytest.raises(ValueError, match=problem.replace(".", r"\.")):
        load_config("toy_addition_posttrain", TINY + [f"constraint.tau_data={data}", "constraint.anneal_from=1.0",
                                                      *override.split()])


def test_tau_under_sampled_gates(tmp_path):
    """constraint.tau_gates=sampled: tau = the starting gated model's CE under the sampled gates (noise seed 0) on
    the tau batches + slack, recomputed here with the reference attention (the step uses the chunked one)."""
    from sparsejax import objective
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer

    cfg = load_config("toy_addition_posttrain", TINY + ["constraint.method=pi", "constraint.tau_gates=sampled",
                                                        "gate.bias=0.5", "constraint.slack=0.01"])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    params, gate = run.params(), run.gate()
    ces, dense = [], []
    for i in range(cfg.data.eval_batches):
        batch = batch_at(run.val_src, i, cfg.data.batch_size, seed=0)
        for out, g, mode in ((ces, gate, "train"), (dense, None, "eval")):
            logits, _ = sj.forward(run.config, params, batch["tokens"][:, :-1], g, mode=mode, seed=jnp.uint32(0),
                                   implementation="reference")
            out.append(float(objective.cross_entropy(logits, batch["tokens"][:, 1:], batch["mask"])))
    np.testing.assert_allclose(run.tau, np.mean(ces) + 0.01, rtol=1e-5)
    assert abs(np.mean(ces) - np.mean(dense)) > 1e-3  # not the dense model's tau


def test_undeclared_parameter_axes_are_an_error():
    """A parameter without declared logical axes is refused (never silently replicated): at sharding, in a bare
    parameter tree and under a train state's parameter root; adapters and counters outside a root stay replicated."""
    mesh = jax.make_mesh((1, 1, 1), sharding.AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
    c = sj.ModelConfig("llama", vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_position=8)
    params = jax.eval_shape(lambda: sj.init_params(c, jax.random.PRNGKey(0)))
    axes = sj.models.decoder.logical_axes(params)
    assert axes["layers"]["attn"]["k"]["kernel"] == ("layers", "embed", "kv_heads")
    sharding.param_shardings(params, mesh)  # every declared parameter places
    bad = {**params, "layers": {**params["layers"], "extra": {"kernel": jax.ShapeDtypeStruct((2, 16, 16), jnp.float32)}}}
    with pytest.raises(ValueError, match="layers/extra/kernel.*PARAM_AXES"):
        sharding.param_shardings(bad, mesh)
    with pytest.raises(ValueError, match="layers/extra/kernel.*PARAM_AXES"):
        sharding.state_shardings({"params": bad, "count": jax.ShapeDtypeStruct((), jnp.int32)}, mesh)
    with pytest.raises(ValueError, match="layers/extra/kernel.*PARAM_AXES"):
        sj.models.decoder.logical_axes(bad)
    wrong_rank = {**params, "final_norm": {"scale": jax.ShapeDtypeStruct((2, 16), jnp.float32)}}
    with pytest.raises(ValueError, match="final_norm/scale"):
        sharding.param_shardings(wrong_rank, mesh)
    state = {"lora": {"layers": {"attn": {"q": {"a": jax.ShapeDtypeStruct((2, 16, 4), jnp.float32)}}}},
             "count": jax.ShapeDtypeStruct((), jnp.int32)}
    assert all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(sharding.state_shardings(state, mesh)))
    with pytest.raises(ValueError, match="layers/attn/q/a"):  # adapters are not model parameters
        sharding.param_shardings(state["lora"], mesh)


def test_noise_annealing_trains_the_deterministic_gates_at_the_end(tmp_path):
    """gate.noise_anneal=a, gate.noise_zero=z (shares of train.steps): the gate noise's scale is 1 until (a + z) of
    the run before its end, then falls linearly to 0, reached z of the run before the end (logged as noise_scale);
    at scale 0 the step's sampled-gate CE is the deterministic CE of the batch (the eval step's, before the
    update)."""
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer

    np.testing.assert_allclose([float(st.noise_scale((6, 4), s)) for s in range(10)],
                               [1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0])
    np.testing.assert_allclose([float(st.noise_scale((6, 4), s, 0.2)) for s in range(5, 11)],  # gate.noise_floor
                               [1, 0.8, 0.6, 0.4, 0.2, 0.2], rtol=1e-6)
    cfg = load_config("toy_addition_posttrain", TINY + ["constraint.method=pi", "gate.bias=0.5", "train.steps=5",
                                                        "gate.noise_anneal=0.4", "gate.noise_zero=0.2"])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    assert run.spec.noise_anneal == (2, 2)  # steps 2-3 anneal (0.5, 0), step 4 at 0
    assert st.noise_steps(load_config("toy_addition_posttrain", ["gate.noise_anneal=0.25", "gate.noise_zero=0"])) == (3000, 1000)
    assert st.noise_steps(load_config("toy_addition_posttrain")) == (2000, 1000)  # the preset: steps 2,000-3,000, then 0
    eval_step = jax.jit(make_eval_step(run.spec))
    for step in range(5):
        batch = batch_at(run.train_src, step, cfg.data.batch_size, cfg.data.seed)
        want = float(eval_step(jax.tree.map(jnp.copy, run.state["trainable"]), run.frozen, batch)["ce"])
        run.state, out = run.step_fn(run.state, run.frozen, batch, jnp.uint32(step))
        assert float(out["noise_scale"]) == [1.0, 1.0, 0.5, 0.0, 0.0][step]
        if step >= 3:
            np.testing.assert_allclose(float(out["ce"]), want, rtol=1e-5)
        elif step < 2:
            assert abs(float(out["ce"]) - want) > 1e-4  # the full noise: another CE


def test_noise_recovery_brings_the_noise_back_while_the_ce_is_over_tau(tmp_path):
    """gate.noise_recover=true: the noise scale is max(annealed scale, violation / slack clipped to [0, 1]), the
    violation being the controller's CE estimate minus tau before the step. At an annealed scale of 0 a run far
    over tau trains under the full noise again (its sampled-gate CE is not the deterministic CE), one under tau
    under the deterministic gates (the same CE, as without recovery)."""
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer

    np.testing.assert_allclose([float(st.recovered_noise(s, v, 0.01)) for s, v in
                                [(0.0, -0.5), (0.0, 0.005), (0.0, 0.5), (0.3, 0.001), (0.3, 0.004), (1.0, -1.0)]],
                               [0.0, 0.5, 1.0, 0.3, 0.4, 1.0], rtol=1e-6)
    for tau, over in ((1e-6, True), (100.0, False)):
        cfg = load_config("toy_addition_posttrain", TINY + [
            "constraint.method=pi", f"constraint.tau={tau}", "constraint.slack=0.01", "gate.bias=0.5",
            "train.steps=4", "gate.noise_anneal=0.25", "gate.noise_zero=0.75", "gate.noise_recover=true"])
        run = Trainer(cfg, tmp_path / f"run{over}", progress=False)
        assert run.spec.noise_anneal == (0, 1) and run.spec.noise_recover == 0.01  # scale 0 from step 0 on
        eval_step = jax.jit(make_eval_step(run.spec))
        for step in range(4):
            batch = batch_at(run.train_src, step, cfg.data.batch_size, cfg.data.seed)
            violation = float(sj_controllers.metrics(run.state["mult_state"])["violation"])
            want = float(eval_step(jax.tree.map(jnp.copy, run.state["trainable"]), run.frozen, batch)["ce"])
            run.state, out = run.step_fn(run.state, run.frozen, batch, jnp.uint32(step))
            np.testing.assert_allclose(float(out["noise_scale"]), np.clip(violation / 0.01, 0, 1), atol=1e-6)
            if step >= 1:  # the controller's estimate has seen a batch: far over (or under) tau
                assert float(out["noise_scale"]) == (1.0 if over else 0.0)
                if over:
                    assert abs(float(out["ce"]) - want) > 1e-4
                else:
                    np.testing.assert_allclose(float(out["ce"]), want, rtol=1e-5)


@pytest.mark.parametrize("sense", ["ce", "density"])
def test_posttrain_says_when_the_final_model_misses_its_target(tmp_path, capsys, sense):
    """`sparsejax posttrain` ends with a notice on stderr when the final model is over its target (by how much, and
    where best_model/ is, or that no evaluation met it), and with none when it met it."""
    from sparsejax import cli

    common = [*TINY, "model.checkpoint=null", "train.steps=4", "train.eval_every=2", "train.final=last",
              "--no-progress"]
    target = {"ce": ("constraint.tau=1e-6", "constraint.tau=100.0"),
              "density": ("constraint.density_target=1e-6", "constraint.density_target=0.999")}[sense]
    extra = [] if sense == "ce" else ["constraint.sense=density", "constraint.pi_ki_follow_lr=false", "gate.bias=0.0"]
    assert cli.main(["posttrain", "toy_addition_posttrain", str(tmp_path / "miss"), *common, *extra, target[0]]) == 0
    err = capsys.readouterr().err
    assert "ends over its target" in err and ("over tau" if sense == "ce" else "over the target") in err
    assert "no evaluated model met the target" in err
    assert cli.main(["posttrain", "toy_addition_posttrain", str(tmp_path / "meet"), *common, *extra, target[1]]) == 0
    assert "ends over its target" not in capsys.readouterr().err
    # a final model over tau with an earlier evaluation under it: the notice names best_model/
    from sparsejax.train import RunDir
    from sparsejax.train.checkpointing import overshoot

    best = RunDir(tmp_path / "meet").best_record()
    assert best is not None and overshoot(best.to_dict(), float(target[1].split("=")[1]), sense) <= 0
    result = {**best.to_dict(), "eval_ce": 150.0 if sense == "ce" else best.eval_ce,
              "edge_density": 1.0 if sense == "density" else best.edge_density,
              "tau": float(target[1].split("=")[1])}
    notice = cli.missed_target(result, sense, tmp_path / "meet")
    assert "best_model" in notice and f"step {best.step}" in notice


def test_tau_on_training_batches_keeps_a_held_out_target_for_the_held_out_ce(tmp_path, capsys):
    """constraint.tau_data=train: tau (the multiplier's target) is the dense CE on training batches + slack; the
    held-out CE is compared with the dense *held-out* CE + slack (the final record's eval_tau, best_model/, the
    missed-target notice), not with a target measured on other data."""
    from sparsejax import cli
    from sparsejax.train import RunDir

    run = tmp_path / "run"
    assert cli.main(["posttrain", "toy_addition_posttrain", str(run), *TINY, "model.checkpoint=null",
                     "train.steps=4", "train.eval_every=2", "train.final=last", "constraint.tau=null",
                     "constraint.tau_data=train", "constraint.slack=0.5", "--no-progress"]) == 0
    start, final = RunDir(run).records("start")[0], RunDir(run).records("final")[-1]
    np.testing.assert_allclose(final["eval_tau"], start["dense_eval_ce"] + 0.5, rtol=1e-6)  # the same dense model
    assert abs(final["tau"] - final["eval_tau"]) > 1e-6  # training batches are other batches
    best = RunDir(run).best_record()  # best_model/ kept against the held-out target
    evals = [r for r in RunDir(run).records() if "eval_ce" in r and r["step"] > 0 and "edge_density" in r]
    feasible = [r for r in evals if r["eval_ce"] <= final["eval_tau"]]
    assert (best is None) == (not feasible)
    if best is not None:
        assert best.eval_ce <= final["eval_tau"]
    # the notice compares with the held-out target, and names it
    res = {"eval_ce": 3.0, "edge_density": 0.1, "tau": 1.0, "eval_tau": 3.2}
    assert cli.missed_target(res, "ce", run) is None  # under the held-out target, though over tau
    notice = cli.missed_target({**res, "eval_ce": 3.3}, "ce", run)
    assert "0.1000 over the held-out target 3.2" in notice


def _select_on_scripted(tmp_path, overrides, train, dense, tail=None):
    """Run the select hook on a stand-in trainer whose training-batch evaluations are scripted: ``train`` maps each
    step to its (mean CE, tail CE), ``dense`` is the dense model's; returns the steps exported and feasible.json."""
    import types

    from sparsejax.train import RunDir
    from sparsejax.train.hooks import SelectFeasible

    exported = []

    class Stand:
        cfg = load_config("toy_addition_posttrain", overrides)
        dir = RunDir(tmp_path)
        train_src = "train-batches"
        step = 0

        def evaluate(self, dense=False, src=None, tail=None):
            assert src == "train-batches" and tail == self.cfg.train.feasible_tail
            ce, tail_ce = dense_ce if dense else train[self.step]
            return {"eval_ce": ce, "tail_ce": tail_ce, "edge_density": 0.5 - self.step / 1000}

        def export(self, path):
            exported.append(self.step)
            path.mkdir(exist_ok=True)

    dense_ce, run, hook = dense, Stand(), SelectFeasible()
    hook.on_start(types.SimpleNamespace(trainer=run))
    for step in train:
        run.step = step
        hook.on_step(types.SimpleNamespace(trainer=run, evaluation={"step": step, "eval_ce": 9.0,
                                                                     "edge_density": 0.1}))
    return exported, RunDir(tmp_path).feasible_record()


def test_final_feasible_keeps_the_last_model_meeting_the_constraint_on_training_batches(tmp_path):
    """The select hook's rule on scripted evaluations (a stand-in trainer): the target is the dense CE on the
    training batches + slack; each evaluation whose training-batch CE is within it replaces feasible_model/, one
    over it (a late break) does not, so the last feasible one stays; without train.feasible_tail the tail is not
    looked at."""
    train = {100: (0.30, 5.0), 200: (0.24, 5.0), 300: (0.26, 5.0), 400: (0.31, 0.0)}  # dense 0.2 + slack 0.1 = 0.3
    exported, rec = _select_on_scripted(tmp_path, ["constraint.slack=0.1", "constraint.tau=null",
                                                   "train.feasible_tail=null"], train, (0.2, 0.0))
    assert exported == [100, 200, 300]
    assert rec["step"] == 300 and rec["train_eval_ce"] == 0.26 and rec["eval_ce"] == 9.0 and "tail_tau" not in rec
    np.testing.assert_allclose(rec["tau"], 0.3)


def test_final_feasible_tail_refuses_a_model_that_loses_its_worst_sequences(tmp_path):
    """train.feasible_tail on scripted evaluations: an evaluation whose mean CE is within its target but whose tail
    (the mean CE of the worst share of the sequences) is over the dense model's tail + feasible_tail_slack is not
    kept; the next one with both within is; feasible.json records the tail numbers."""
    train = {100: (0.25, 0.5), 200: (0.24, 0.6), 300: (0.22, 1.9), 400: (0.29, 0.7)}  # (mean, tail) per step
    exported, rec = _select_on_scripted(tmp_path, ["constraint.slack=0.1", "constraint.tau=null",
                                                   "train.final=feasible", "train.feasible_tail=0.02",
                                                   "train.feasible_tail_slack=0.4"], train, (0.2, 0.4))
    assert exported == [100, 200, 400]  # targets: mean 0.3, tail 0.8
    assert rec["step"] == 400 and rec["train_tail_ce"] == 0.7 and rec["tail_share"] == 0.02
    np.testing.assert_allclose([rec["tau"], rec["tail_tau"]], [0.3, 0.8])
    with pytest.raises(ValueError, match="train.feasible_tail"):
        load_config("toy_addition_posttrain", ["train.final=feasible", "train.feasible_tail=1.5"])


def test_tail_mean_is_the_mean_of_the_largest_share():
    """tail_mean against sorting by hand: the largest ceil(share * n) values (at least one)."""
    from sparsejax.train.evaluate import tail_mean

    x = np.random.default_rng(0).permutation(np.arange(1.0, 101.0))
    assert tail_mean(x, 0.02) == 99.5 and tail_mean(x, 0.015) == 99.5 and tail_mean(x, 0.01) == 100.0
    assert tail_mean(x, 0.001) == 100.0 and tail_mean(x, 1.0) == 50.5 and tail_mean(x, 0.1) == 95.5
    with pytest.raises(ValueError, match="share in"):
        tail_mean(x, 0.0)


def test_final_feasible_exports_the_model_meeting_the_constraint_on_training_batches(tmp_path, capsys):
    """train.final=feasible in a run: with every evaluation feasible, model/ is the final model, and feasible.json's
    training-batch numbers are those of an independent hook evaluating the model on those batches, and of the
    exported files themselves; its held-out numbers those of that step's evaluation; with no feasible evaluation
    model/ is the last step's model. Refused without a target or evaluations."""
    from sparsejax import cli
    from sparsejax.data import addition
    from sparsejax.train import RunDir, Trainer
    from sparsejax.data import batch_at
    from sparsejax.seeds import EVAL_ORDER

    common = [*TINY, "model.checkpoint=null", "train.steps=6", "train.eval_every=2", "train.final=feasible",
              "gate.bias=0.5", "constraint.method=pi"]
    seen = {}
    cfg = load_config("toy_addition_posttrain", [*common, "constraint.tau=100.0", "train.feasible_tail=0.05",
                                                 "train.feasible_tail_slack=100.0"])
    run = Trainer(cfg, tmp_path / "all", progress=False)
    run.add_hook(lambda info: seen.setdefault(info.step, run.evaluate(src=run.train_src)), 2, last=True,
                 before="select")
    run.fit()
    rec = RunDir(tmp_path / "all").feasible_record()
    want = max(seen)  # every evaluation feasible: the last one
    assert want == 6 and rec["step"] == want and rec["tau"] == 100.0
    np.testing.assert_allclose(rec["train_edge_density"], seen[want]["edge_density"])
    held_out = {r.step: r for r in RunDir(tmp_path / "all").records("eval")}
    np.testing.assert_allclose(rec["eval_ce"], held_out[want].eval_ce)
    m = sj.from_pretrained(tmp_path / "all" / "model")  # the exported model/ is that model: its CE on the batches
    f = jax.jit(lambda t: sj.forward(m.config, m.params, t, m.gate, mode="eval")[0])
    ces, rows = [], []
    for b in (batch_at(addition.source("train"), i, cfg.data.batch_size, seed=EVAL_ORDER)
              for i in range(cfg.data.eval_batches)):
        logits = f(b["tokens"][:, :-1])
        ces.append(float(sj.objective.cross_entropy(logits, b["tokens"][:, 1:], b["mask"])))
        x = np.asarray(logits, np.float64)  # each row's answer loss, in float64 numpy
        logp = x - x.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        nll = -np.take_along_axis(logp, np.asarray(b["tokens"])[:, 1:, None], -1)[..., 0]
        mask = np.asarray(b["mask"], np.float64)
        rows.extend((nll * mask).sum(1) / mask.sum(1))
    np.testing.assert_allclose(np.mean(ces), rec["train_eval_ce"], rtol=1e-5)
    worst = np.sort(rows)[-int(np.ceil(0.05 * len(rows))):]  # the worst 5% of the training-batch problems
    np.testing.assert_allclose(rec["train_tail_ce"], worst.mean(), rtol=1e-4)
    assert rec["tail_share"] == 0.05 and rec["train_tail_ce"] > rec["train_eval_ce"]
    for name in ("model.safetensors", "sparsejax_gate.json"):
        assert (tmp_path / "all" / "model" / name).read_bytes() == (tmp_path / "all" / "feasible_model" / name).read_bytes()

    assert cli.main(["posttrain", "toy_addition_posttrain", str(tmp_path / "none"), *common, "constraint.tau=1e-6",
                     "--no-progress"]) == 0
    assert "no evaluated model met the constraint on the training batches" in capsys.readouterr().err
    assert RunDir(tmp_path / "none").feasible_record() is None and (tmp_path / "none" / "model").exists()
    with pytest.raises(ValueError, match="train.final=feasible picks"):
        load_config("toy_addition_posttrain", ["train.final=feasible", "train.eval_every=0"])
    with pytest.raises(ValueError, match="or set train.final=last"):
        load_config("toy_addition_posttrain", ["constraint.method=penalty", "constraint.pi_ki_follow_lr=false"])
