"""``sparsejax plan``: prove a post-training setup fits by compiling it, not by running it.

The post-training step of a preset is built from abstract shapes (``jax.ShapeDtypeStruct``: nothing is allocated,
no checkpoint is read), placed on a mesh by the logical-axis rules, lowered and compiled for a simulated mesh of
fake host devices (in a subprocess, since the device count is fixed when JAX starts), and XLA's own analyses give
the per-device memory (arguments + outputs + temporaries - aliased, i.e. the donated train state counted once) and
the FLOPs of one step. The numbers are XLA:CPU's for that program: an accelerator's compiler fuses and schedules
differently, so treat them as the plan's size, not a measurement of a TPU/GPU run (docs/scaling.md).

    sparsejax plan olmo_7b --shape olmo-7b --mesh fsdp=16            # 16 devices, FSDP
    sparsejax plan olmo_7b --shape olmo-7b --mesh data=1 train.lora_rank=16 --json
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

# Well-known model shapes (architecture only; weights are never needed to plan). One place per shape.
SHAPES = {
    "gpt2": dict(family="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_position=1024),
    "llama-3.2-1b": dict(family="llama", vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                         d_ff=8192, max_position=131072, rope_theta=500000.0, tie_embeddings=True),
    "llama-2-7b": dict(family="llama", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
                       max_position=4096),
    "olmo-7b": dict(family="olmo", vocab_size=50304, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
                    max_position=2048),
    "olmo2-7b": dict(family="olmo2", vocab_size=100352, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
                     max_position=4096),
    # Gemma 3 text models (local layers: sliding window; every sixth layer global). The 4B's global layers use
    # linear RoPE scaling (factor 8), which does not change a shape.
    "gemma-3-270m": dict(family="gemma3", vocab_size=262144, d_model=640, n_layers=18, n_heads=4, n_kv_heads=1,
                         head_dim=256, d_ff=2048, max_position=32768, sliding_window=512),
    "gemma-3-1b": dict(family="gemma3", vocab_size=262144, d_model=1152, n_layers=26, n_heads=4, n_kv_heads=1,
                       head_dim=256, d_ff=6912, max_position=32768, sliding_window=512),
    "gemma-3-4b": dict(family="gemma3", vocab_size=262208, d_model=2560, n_layers=34, n_heads=8, n_kv_heads=4,
                       head_dim=256, d_ff=10240, max_position=131072, sliding_window=1024),
}
MESH_AXES = ("data", "fsdp", "tensor")


def parse_mesh(items) -> dict:
    """``["fsdp=16", "tensor=2"]`` -> ``{"data": 1, "fsdp": 16, "tensor": 2}``."""
    mesh = dict.fromkeys(MESH_AXES, 1)
    for item in items or ():
        for part in item.split(","):
            name, _, value = part.partition("=")
            if name not in mesh or not value.isdigit() or int(value) < 1:
                raise ValueError(f"mesh entry {part!r} must look like AXIS=N with AXIS in {MESH_AXES} and N >= 1 "
                                 "(e.g. --mesh fsdp=16 tensor=2)")
            mesh[name] = int(value)
    return mesh


def plan_overrides(shape: str | None, mesh: dict) -> list[str]:
    """The config overrides that put a named shape (no checkpoint) and the mesh into the run config."""
    out = [f"mesh.{k}={v}" for k, v in mesh.items()]
    if shape is not None:
        if shape not in SHAPES:
            raise ValueError(f"unknown model shape {shape!r}; known: {', '.join(SHAPES)}")
        out += ["model.checkpoint=null"] + [f"model.{k}={v}" for k, v in SHAPES[shape].items()]
    return out


def analytic_flops(config, batch: int, seq: int, *, lora: bool, forwards: float = 0.0) -> float:
    """Model FLOPs of one step: ``tokens x (6 N + 3 A)`` for full training (``4 N``: LoRA's backward computes no
    weight gradients of the frozen matrices), plus ``tokens x (2 N + A)`` for each further forward pass of a step
    (``forwards``, averaged over steps: the distillation teacher's, the multiplier's measurements,
    ``train.step.measurement_forwards``).
    ``N``: matrix parameters (everything but the input embedding lookup); ``A = 2 L H hd (T + 1)``: the causal
    attention products (QK^T and PV over the average T/2 + 1/2 keys) per token (a sliding-window layer: over its
    average visible keys, ``pairs / T``). XLA's cost analysis cannot be used
    for this: it counts the body of the layer scan once, not once per layer."""
    import jax

    import sparsejax as sj

    shapes = jax.eval_shape(lambda: sj.init_params(config, jax.random.PRNGKey(0)))
    n = sum(x.size for x in jax.tree.leaves(shapes))
    if not config.tie_embeddings:
        n -= shapes["embed"]["tokens"].size
    if "positions" in shapes["embed"]:
        n -= shapes["embed"]["positions"].size
    def pairs(w):  # (query, key) pairs a layer attends: sum_i min(i + 1, w)
        return seq * (seq + 1) // 2 if w is None or w >= seq else w * (w + 1) // 2 + (seq - w) * w

    attn = 4 * config.n_heads * config.head_dim * sum(pairs(w) for w in config.layer_windows()) / seq
    tokens = batch * seq
    flops = tokens * ((4 if lora else 6) * n + 3 * attn)
    flops += forwards * tokens * (2 * n + attn)
    return float(flops)


def compile_plan(cfg) -> dict:
    """Compile the post-training step of ``cfg`` on the current devices (which must number the mesh's size) from
    abstract shapes; returns the plan's numbers and the compiled executable under ``"compiled"``."""
    import jax

    import sparsejax as sj
    from . import sharding
    from .config import model_config
    from .train import make_train_step
    from .train import state as st
    from .train import step as stp

    if cfg.model.checkpoint:
        raise ValueError(f"model.checkpoint={cfg.model.checkpoint!r}: plan works from shapes, not weights; pass "
                         f"--shape NAME (one of {', '.join(SHAPES)}) or model.* overrides with model.checkpoint=null")
    config = model_config(cfg.model)
    shapes = jax.eval_shape(lambda: sj.init_params(config, jax.random.PRNGKey(0)))
    model = sj.Model(config, shapes)
    spec = st.step_spec(cfg, model)
    trainable, frozen = jax.eval_shape(lambda p: st.split_params(cfg, spec, sj.Model(config, p)), shapes)
    # tau, guard_tau: any value (shapes only)
    optimizer, multiplier = stp.make_optimizer(cfg), stp.make_multiplier(cfg, 1.0, guard_tau=1.0)
    state = st.abstract_state(trainable, optimizer, multiplier, st.holds_probe(spec, multiplier), spec.control)
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    rules = sharding.parse_rules(cfg.mesh.rules)
    place = lambda tree: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                                      sharding.state_shardings(tree, mesh, rules))
    b, t = cfg.data.batch_size, cfg.data.seq_len
    batch_sh = sharding.batch_sharding(mesh, rules)
    batch = {"tokens": jax.ShapeDtypeStruct((b, t + 1), jax.numpy.int32, sharding=batch_sh),
             "mask": jax.ShapeDtypeStruct((b, t), jax.numpy.float32, sharding=batch_sh)}
    if spec.aside:  # data.aside: the step's held-aside rows beside its batch
        batch.update({f"aside_{k}": v for k, v in batch.items()})
    seed = jax.ShapeDtypeStruct((), jax.numpy.uint32, sharding=sharding.replicated(mesh))
    step = jax.jit(make_train_step(spec, optimizer, multiplier), donate_argnums=0)
    with jax.set_mesh(mesh):
        compiled = step.lower(place(state), place(frozen), batch, seed).compile()
    mem = compiled.memory_analysis()
    # the distillation teacher's forward and the multiplier's measurements, per step
    forwards = float(cfg.train.distill > 0) + (stp.measurement_forwards(spec) if multiplier is not None else 0.0)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    n_params = sum(x.size for x in jax.tree.leaves(shapes))
    n_trainable = sum(x.size for x in jax.tree.leaves(trainable))
    per_device = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                  - mem.alias_size_in_bytes)
    return {"devices": mesh.size, "mesh": dict(zip(mesh.axis_names, mesh.devices.shape)), "params": int(n_params),
            "trainable_params": int(n_trainable), "bytes_per_device": int(per_device),
            "argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
            "temp_bytes": int(mem.temp_size_in_bytes), "alias_bytes": int(mem.alias_size_in_bytes),
            "flops_per_step": analytic_flops(config, b, t, lora=cfg.train.lora_rank > 0, forwards=forwards),
            "xla_flops_per_step": float(cost.get("flops", float("nan"))) * mesh.size,
            "tokens_per_step": b * t, "grad_accum": cfg.train.grad_accum, "seq_len": t, "global_batch": b,
            "dtype": cfg.model.dtype, "remat": cfg.model.remat, "lora_rank": cfg.train.lora_rank,
            "distill": cfg.train.distill, "attention": cfg.train.attention, "compiled": compiled}


def _child(argv):
    """In the subprocess (device count already set): compile and print one JSON line."""
    from .config import load_config

    source, overrides = argv[0], argv[1:]
    cfg = load_config(source, overrides)
    res = compile_plan(cfg)
    res.pop("compiled")
    print("PLAN_JSON " + json.dumps(res))


def run_plan(source: str, overrides: list[str], devices: int, timeout: float | None = None) -> dict:
    """Compile in a fresh process with ``devices`` fake CPU devices; returns the plan (raises on failure)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", "import sys; from sparsejax.plan import _child; _child(sys.argv[1:])",
                           source, *overrides], env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("PLAN_JSON "):
            return json.loads(line[len("PLAN_JSON "):])
    err = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise RuntimeError(f"planning failed: {err}")


def format_plan(p: dict) -> str:
    gib = lambda x: f"{x / 2**30:.2f} GiB"
    mesh = " x ".join(f"{k}={v}" for k, v in p["mesh"].items() if v > 1) or "1 device"
    return "\n".join([
        f"mesh: {mesh} ({p['devices']} devices); params {p['params'] / 1e9:.3f} B "
        f"(trainable {p['trainable_params'] / 1e9:.3f} B); {p['dtype']}, remat={p['remat']}, "
        f"lora_rank={p['lora_rank']}, distill={p['distill']}",
        f"per device: {gib(p['bytes_per_device'])} = arguments {gib(p['argument_bytes'])} + outputs "
        f"{gib(p['output_bytes'])} + temporaries {gib(p['temp_bytes'])} - aliased {gib(p['alias_bytes'])}",
        f"per step: {p['flops_per_step'] / 1e12:.1f} TFLOP (model FLOPs; XLA's count, layer scan body once: "
        f"{p['xla_flops_per_step'] / 1e12:.1f}) for {p['tokens_per_step']} tokens "
        f"(global batch {p['global_batch']} x {p['seq_len']}; grad_accum {p['grad_accum']} steps per update)",
    ])
