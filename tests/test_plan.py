"""``sparsejax plan``: the step compiled from abstract shapes on a simulated mesh reports the same memory and
parameter count as the step of an actual run on the same mesh (8 fake CPU devices, in a subprocess)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from sparsejax import cli
from sparsejax.plan import SHAPES, parse_mesh, plan_overrides

TINY = ["model.family=llama", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64", "data.batch_size=16",
        "data.eval_batches=1", "gate.enabled=true"]


def test_plan_matches_an_actual_run_on_8_devices(tmp_path):
    script = textwrap.dedent(f"""
        import json, jax, jax.numpy as jnp
        from sparsejax.config import load_config
        from sparsejax.data import batch_at
        from sparsejax.plan import compile_plan
        from sparsejax.train import Trainer
        overrides = {TINY!r} + ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "train.lora_rank=0"]
        cfg = load_config("toy_addition_pretrain", overrides)
        plan = compile_plan(cfg)
        plan.pop("compiled")
        tr = Trainer(cfg, {str(tmp_path / 'run')!r}, progress=False)
        batch = jax.device_put(batch_at(tr.train_src, 0, cfg.data.batch_size), tr.batch_sharding)
        with jax.set_mesh(tr.mesh):
            mem = tr.step_fn.lower(tr.state, tr.frozen, batch, jnp.uint32(0)).compile().memory_analysis()
        actual = dict(argument_bytes=mem.argument_size_in_bytes, output_bytes=mem.output_size_in_bytes,
                      temp_bytes=mem.temp_size_in_bytes, alias_bytes=mem.alias_size_in_bytes,
                      params=sum(x.size for x in jax.tree.leaves(tr.params())), devices=len(jax.devices()))
        # activations carry logical-axis constraints inside the steps (and only there)
        import sparsejax as sj
        from sparsejax import sharding
        config = sj.ModelConfig(family="llama", vocab_size=16, d_model=32, n_layers=1, n_heads=4, d_ff=64,
                                max_position=16)
        params = jax.eval_shape(lambda: sj.init_params(config, jax.random.PRNGKey(0)))
        tok = jax.ShapeDtypeStruct((8, 8), jnp.int32)
        def fwd(p, t, rules):
            if rules:
                with sharding.use_rules():
                    return sj.forward(config, p, t)[0]
            return sj.forward(config, p, t)[0]
        with jax.set_mesh(sharding.make_mesh(2, 2, 2)):
            constraints = [jax.jit(fwd, static_argnums=2).lower(params, tok, r).as_text().count("sharding_constraint")
                           for r in (True, False)]
        print("RESULT " + json.dumps(dict(plan=plan, actual=actual, constraints=constraints)))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stderr[-3000:]
    res = json.loads(line[0][len("RESULT "):])
    plan, actual = res["plan"], res["actual"]
    assert plan["devices"] == actual["devices"] == 8
    for key in ("argument_bytes", "output_bytes", "temp_bytes", "alias_bytes", "params"):
        assert plan[key] == actual[key], (key, plan[key], actual[key])
    assert plan["bytes_per_device"] == (actual["argument_bytes"] + actual["output_bytes"] + actual["temp_bytes"]
                                        - actual["alias_bytes"])
    assert plan["flops_per_step"] > 0 and plan["tokens_per_step"] == 16 * 10
    with_rules, without = res["constraints"]
    assert with_rules >= 6 and without == 0  # resid x2, q, k, v, mlp, logits


def test_plan_cli_json_and_errors(capsys):
    assert cli.main(["plan", "toy_addition_pretrain", *TINY, "--mesh", "data=2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["devices"] == 2 and out["mesh"]["data"] == 2
    for key in ("devices", "params", "bytes_per_device", "flops_per_step", "tokens_per_step"):
        assert key in out
    # model FLOPs: equal to XLA's count where that count is exact (one layer: the scan body runs once)
    one = ["model.n_layers=1", "model.d_model=512", "model.n_heads=8", "model.d_ff=2048", "model.vocab_size=512",
           "model.max_position=128", "data.batch_size=64"]
    assert cli.main(["plan", "toy_addition_pretrain", *one, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flops_per_step"] == pytest.approx(out["xla_flops_per_step"], rel=0.05)
    with pytest.raises(ValueError, match="AXIS=N"):
        parse_mesh(["fsdp=0"])
    with pytest.raises(ValueError, match="unknown model shape"):
        plan_overrides("gpt5", parse_mesh([]))
    assert cli.main(["plan", "olmo_7b"]) == 2  # a checkpoint preset without --shape: one clear line
    assert "--shape" in capsys.readouterr().err
    assert set(SHAPES) >= {"gpt2", "llama-2-7b", "olmo-7b"}


def test_gemma3_shapes_count_the_published_parameters():
    """The Gemma 3 shapes (sliding-window families plan like any other) hold the models' published parameter
    counts: 268,098,176 (270M, = the real checkpoint's) and 999,885,952 (1B)."""
    import jax

    import sparsejax as sj

    for name, want in (("gemma-3-270m", 268_098_176), ("gemma-3-1b", 999_885_952)):
        config = sj.ModelConfig(**SHAPES[name])
        assert config.layer_windows().count(None) == config.n_layers // 6
        shapes = jax.eval_shape(lambda c=config: sj.init_params(c, jax.random.PRNGKey(0)))
        assert sum(x.size for x in jax.tree.leaves(shapes)) == want, name
    from sparsejax.config import load_config, model_config
    from sparsejax.plan import analytic_flops

    big = model_config(load_config(None, plan_overrides("gemma-3-4b", parse_mesh([]))).model)
    assert (big.family, big.n_kv_heads, big.layer_windows()[:6]) == ("gemma3", 4, (1024,) * 5 + (None,))
    full = big.replace(layer_types=("full_attention",) * big.n_layers)  # the window halves attention at T = 4096
    a, b = (analytic_flops(c, 1, 4096, lora=False) for c in (big, full))
    saved = 29 * (4096 * 4097 // 2 - (1024 * 1025 // 2 + 3072 * 1024))  # 29 of 34 layers local: pairs not attended
    assert abs((b - a) - 3 * 4 * 8 * 256 * saved) < 1e-6 * b  # 3 x (QK^T + PV) x H x hd per pair


def test_model_flops_count_the_multipliers_measurements(capsys):
    """The plan's model FLOPs add one forward pass (tokens x (2 N + A)) per deterministic-gate measurement of the
    multiplier's input and one per dense reference (``constraint.tau_data=batch``), averaged over
    ``measure_every``; a fixed penalty measures nothing."""
    from sparsejax.config import load_config, model_config
    from sparsejax.plan import analytic_flops

    base = ["model.checkpoint=null", *TINY, "constraint.method=pi", "constraint.slack=0.01"]
    cases = {("constraint.measure=sampled",): 0.0, ("constraint.measure=deterministic",
                                                     "constraint.measure_every=1"): 1.0,
             ("constraint.measure=deterministic", "constraint.measure_every=4"): 0.25,
             ("constraint.measure=deterministic", "constraint.measure_every=4", "constraint.tau_data=batch"): 0.5,
             ("constraint.measure=sampled", "constraint.tau_data=batch"): 1.0,
             # a dense control trained beside: its forward and backward (three forwards) every step
             ("constraint.measure=deterministic", "constraint.measure_every=4", "constraint.tau_data=control"): 3.25,
             # ... measured on held-aside rows: the control's forward there too, when measured
             ("constraint.measure=deterministic", "constraint.measure_every=4", "constraint.tau_data=control",
              "data.aside=0.05"): 3.5,
             # distillation: the teacher's forward, which also gives the reference
             ("constraint.measure=deterministic", "constraint.measure_every=4", "constraint.tau_data=batch",
              "train.distill=1.0"): 1.25,
             ("constraint.method=penalty", "constraint.pi_ki_follow_lr=false", "train.final=last",
              "constraint.measure=deterministic"): 0.0}
    config = model_config(load_config("toy_addition_posttrain", base).model)
    b, t = 16, load_config("toy_addition_posttrain", base).data.seq_len
    train = analytic_flops(config, b, t, lora=False)
    forward = analytic_flops(config, b, t, lora=False, forwards=1.0) - train
    for extra, n in cases.items():
        assert cli.main(["plan", "toy_addition_posttrain", *base, *extra, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["flops_per_step"] == pytest.approx(train + n * forward, rel=1e-9), extra
