"""SmolLM2-135M on one GPU (issue I.7): the sparse post-training step's tokens/s and model FLOP utilisation with
the fused Pallas kernel against dense cuDNN attention, and the attention kernel alone against the authors' own
(PyTorch + Helion) and torch's SDPA. Prepared for a session that is lent one H100/H200; ``--smoke`` runs every
section on a CPU at tiny sizes (Pallas in interpret mode) so that the script is known to run before then.

    bash benchmarks/smollm2_gpu.sh              # on the device: both sections, <= 8 min, tables to $OUT
    bash benchmarks/smollm2_gpu.sh --smoke      # here (CPU): the same command path at tiny sizes (~2-3 min)
    python benchmarks/smollm2_gpu.py --section step --seq 1024 --modes lora   # one part by hand

Section ``step`` (JAX only): one post-training step of the SmolLM2-135M shape (llama, 30 layers, d_model 576, 9
query / 3 key-value heads of 64, SwiGLU 1536, vocab 49,152, tied embeddings, RoPE theta 1e5), bf16 compute
(float32 parameters and optimiser state), exactly the step the CLI runs: ``Trainer(cfg).step_fn`` for the
``shakespeare_posttrain`` preset with the SmolLM2 run's overrides (density target 1%, PI multiplier, learnable
per-head gate bias with its own lr, AdamW, grad clipping). Fine-tuning: LoRA r=16 on q, k, v, o (the CLI run's) and
full. Attention: ``train.attention=pallas`` (sparse, sampled gates) against the dense step (gate off, no
multiplier: the CLI's dense control) whose attention is ``jax.nn.dot_product_attention(implementation="cudnn")``.
sparsejax's own dense path (``gate=None``) would run the same Pallas kernel without gates; the cuDNN reference is
patched into the decoder for this benchmark only (``_dense_attention_patch``; GQA native). T in {64 (the paper's
Short, the CLI run's), 1024, 4096}, batch = ``--tokens`` / T (32,768 tokens a step by default; halved once on
out-of-memory). Per row: XLA compile time, median step time over ``--repeats`` steps after one warm-up, tokens/s,
the ratio to the dense cuDNN step of the same T and fine-tuning, and MFU = model FLOPs per token x tokens/s / the
device's peak dense bf16 FLOP/s (H100 SXM / H200: 989 TFLOP/s; read from the device name; ``--peak-tflops``
overrides). Model FLOPs per token: 6N (N = 134.5M, every matmul weight, the tied LM head counted once) + causal
attention 6 L H d_head (T + 1) (QK^T and PV, forward + backward, the lower triangle only); ``MFU needed`` counts what
LoRA actually needs, 4N + attention (no gradient of the frozen base weights). The gates' elementwise work is not
counted.

Section ``kernel`` (JAX and torch in one process, ``XLA_PYTHON_CLIENT_MEM_FRACTION`` leaving torch room): fwd+bwd of
one attention layer at SmolLM2's head shape (9 query heads, 3 key-value heads, d_head 64), causal, bf16, sampled
(train) gates, one scalar gate bias 2.0 (most gates open; the authors' kernel takes one float bias), T in {1024,
4096, 8192}, batch = 16,384 tokens / T: sparsejax's Pallas kernel (GQA native) vs the authors' Helion kernel
(``splash_attention``, github.com/hrpan/splash_attention, MIT, as shipped with its tuned configs: its first call
autotunes over them, timed separately; it asserts q, k, v of one shape, so k and v are repeated to 9 heads before
the timed call) vs ``torch.nn.functional.scaled_dot_product_attention`` (dense, ``enable_gqa``) vs JAX's cuDNN dense
attention; one table with the ratios to cuDNN and to the Helion kernel (the Helion rows run after the others at
every T, so that its autotuning cannot take the others' time). It also checks that the two sparse kernels
state the same method on the same inputs: their expected densities (mean sigmoid(s + b), per batch and head) and the
deterministic (eval) outputs. The authors' code is called from their copy (``.whl/splash_attention``, or
``../shared/anchors/splash_attention``), never copied here. The check compares with their own plain PyTorch formula
(``sparse_attention_naive``) everywhere and with their Helion kernel on a GPU; on CPU (``--smoke``) the Helion kernel
cannot run (Triton needs a GPU): its call is attempted and its error reported.

Weights: random, of the SmolLM2 shape, and random tokens. Step time and MFU do not depend on the weights' values
(the training kernels' work does not depend on how many gates are open: only causally empty tiles are skipped;
skipping tiles of closed gates is inference-only, ``experiments/block_skipping_kernel.py``). The real weights would only give a
loss number, and a meaningful loss needs real text too; carrying them costs two device calls (the 98 MB GGUF over
a 64 MiB limit a call), the ``gguf`` wheel and a dequantisation on the device, for nothing that these tables
report. Hence nothing large travels: the helion wheel (4.7 MB) and the authors' source (< 0.1 MB).

Every section prints its table as rows finish, writes it to ``--out`` (``smollm2_gpu_<section>.md`` and ``.json``,
rewritten after every row, so a run cut short keeps what it measured) and has a time budget (``--budget`` seconds:
a row that would not fit is listed as skipped); a failing row or part prints why and the rest still runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

# SmolLM2-135M's config.json as sparsejax's converter writes it (sparsejax data smollm2)
SMOLLM2 = dict(family="llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
               d_ff=1536, max_position=8192, rope_theta=100000.0, tie_embeddings=True, norm_eps=1e-5)
# --smoke: the same block (heads, head_dim, d_ff), 2 layers and a small vocabulary
SMOKE = dict(SMOLLM2, n_layers=2, vocab_size=512)
# peak dense bf16 FLOP/s by device name (first match wins; H100 SXM and H200: the same tensor cores and clocks)
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989e12), ("H200", 989e12), ("H100", 989e12))
KERNEL_BIAS = 2.0
KERNEL_SEED = 1234


# ------------------------------------------------------------------------------------------------ common
def device_info():
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    return dev, kind, jax.default_backend()


def peak_flops(kind: str, override: float | None):
    if override:
        return override * 1e12
    return next((p for name, p in PEAK_BF16 if name.lower() in kind.lower()), None)


def fmt(x, spec):
    return "—" if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def short_error(e: BaseException, n: int = 300) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text[:n]


def is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "OutOfMemory" in type(e).__name__


class Overtime(BaseException):
    """A row over its time budget: not an ``Exception``, so that no library's ``except Exception`` swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`Overtime` in the main thread after ``seconds`` (best effort: between Python bytecodes)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise Overtime(f"over its time budget ({seconds:.0f} s)")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Table:
    """A markdown table printed row by row and rewritten to ``out/name.md`` (+ ``.json``) after every row."""

    def __init__(self, out: str, name: str, title: str, columns: list[str], notes: list[str]):
        self.out, self.name, self.title, self.columns, self.notes = out, name, title, columns, notes
        self.rows, self.records = [], []
        print(f"\n# {title}", flush=True)
        print("| " + " | ".join(columns) + " |", flush=True)
        print("|" + "|".join("---" for _ in columns) + "|", flush=True)

    def add(self, cells: list[str], record: dict):
        self.rows.append(cells)
        self.records.append(record)
        print("| " + " | ".join(cells) + " |", flush=True)
        self.write()

    def sort(self, key):
        pairs = sorted(zip(self.records, self.rows), key=lambda p: key(p[0]))
        self.records, self.rows = [p[0] for p in pairs], [p[1] for p in pairs]
        self.write()

    def finish(self):
        """The whole table again (columns filled in after their rows were printed), then the notes."""
        print(f"\n# {self.title} (final)", flush=True)
        print("\n".join(["| " + " | ".join(self.columns) + " |", "|" + "|".join("---" for _ in self.columns) + "|"]
                        + ["| " + " | ".join(r) + " |" for r in self.rows] + [""] + self.notes), flush=True)
        self.write()

    def write(self):
        if not self.out:
            return
        os.makedirs(self.out, exist_ok=True)
        lines = [f"# {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        lines += [""] + self.notes
        with open(os.path.join(self.out, f"smollm2_gpu_{self.name}.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(self.out, f"smollm2_gpu_{self.name}.json"), "w") as f:
            json.dump({"title": self.title, "notes": self.notes, "rows": self.records}, f, indent=1, default=str)


class Budget:
    """Seconds left of a section; a row is started only when the longest row so far still fits."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.longest = 0.0

    def left(self) -> float:
        return self.end - time.monotonic()

    def fits(self) -> bool:
        return self.left() > self.longest

    def took(self, seconds: float):
        self.longest = max(self.longest, seconds)


# ------------------------------------------------------------------------------------------------ step section
_DENSE = {"impl": None}  # set per variant: "cudnn" / "xla" routes every gate-less attention call there


def _dense_attention_patch():
    """Route the decoder's gate-less attention calls through ``jax.nn.dot_product_attention(implementation=...)``
    while ``_DENSE["impl"]`` is set (read at trace time); every other call goes to sparsejax as before."""
    import jax
    import jax.numpy as jnp

    import sparsejax.models.decoder as decoder
    from sparsejax.attention import AttentionStats

    if getattr(decoder.sparse_attention, "_smollm2_gpu_patch", False):
        return
    original = decoder.sparse_attention

    def attention(q, k, v, gate=None, **kw):
        impl = _DENSE["impl"]
        if impl is None or gate is not None or kw.get("attention_mask") is not None or kw.get("window") is not None:
            return original(q, k, v, gate, **kw)
        out = jax.nn.dot_product_attention(q, k, v, is_causal=kw.get("causal", True), implementation=impl)
        ones = jnp.ones((q.shape[0], q.shape[2]), jnp.float32)
        return out, AttentionStats(ones, None, ones)

    attention._smollm2_gpu_patch = True
    decoder.sparse_attention = attention


def model_flops_per_token(shape: dict, t: int) -> tuple[float, float, float]:
    """``(N, 6N + attention, 4N + attention)`` per token of one training step at context ``t`` (causal)."""
    d, h, kv, hd, f, L, v = (shape[k] for k in ("d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "n_layers",
                                                 "vocab_size"))
    per_layer = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f
    n = L * per_layer + d * v  # the LM head (tied: the embedding matrix once; the lookup itself is free)
    attention = 6.0 * L * h * hd * (t + 1)  # 2 matmuls x 2 FLOPs x (t + 1) / 2 keys on average, x 3 (fwd + bwd)
    return float(n), 6.0 * n + attention, 4.0 * n + attention


def step_overrides(shape: dict, t: int, mode: str, attention: str, dtype: str) -> list[str]:
    over = [f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in shape.items()]
    over += [f"model.dtype={dtype}", "data.kind=addition", "data.batch_size=8", "data.eval_batches=1",
             "train.steps=1000", "constraint.sense=density", "constraint.density_target=0.01", "gate.bias_lr=0.03"]
    # the step does not depend on data.*: the batches below are random tokens of shape [B, T + 1]; the in-memory
    # addition data only keeps the Trainer from reading a corpus
    over.append(f"train.attention={'pallas' if attention == 'pallas' else 'auto'}")
    if mode == "lora":
        over.append("train.lora_rank=16")
    if attention != "pallas":  # the dense step: the CLI's dense control (gate off, no multiplier)
        over += ["gate.enabled=false", "constraint.method=none", "constraint.sense=ce",
                 "constraint.density_target=null"]
    return over


def run_step_variant(shape, t, b, mode, attention, dtype, repeats, dense_impl):
    import jax

    from sparsejax.config import load_config
    from sparsejax.train import Trainer
    from sparsejax.seeds import step_noise

    cfg = load_config("shakespeare_posttrain", step_overrides(shape, t, mode, attention, dtype))
    _DENSE["impl"] = dense_impl if attention != "pallas" else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Trainer(cfg, f"{tmp}/run", progress=False)
            rng = np.random.default_rng(t * 1000 + b)
            batches = []
            for _ in range(repeats + 1):
                tokens = rng.integers(0, shape["vocab_size"], size=(b, t + 1), dtype=np.int32)
                batch = {"tokens": tokens, "mask": np.ones((b, t), np.float32)}
                batches.append(jax.device_put(batch, run.batch_sharding))
            with jax.set_mesh(run.mesh):
                t0 = time.perf_counter()
                compiled = run.step_fn.lower(run.state, run.frozen, batches[0], step_noise(1, 0)).compile()
                compile_s = time.perf_counter() - t0
                try:
                    temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
                except Exception:  # noqa: BLE001 - not every backend reports it
                    temp_mib = float("nan")
                times = []
                state = run.state
                for i, batch in enumerate(batches):
                    t0 = time.perf_counter()
                    state, out = compiled(state, run.frozen, batch, step_noise(1, i))
                    jax.block_until_ready(out)
                    times.append(time.perf_counter() - t0)
                run.state = state
            out = jax.device_get(out)
            loss = float(out["loss"])
            if not np.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss}")
            edges = float(np.mean(out["edges"])) if attention == "pallas" else 1.0
            del run, state, compiled, batches
    finally:
        _DENSE["impl"] = None
    step_s = statistics.median(times[1:])
    return dict(compile_s=compile_s, step_ms=step_s * 1e3, tokens_per_s=b * t / step_s, temp_mib=temp_mib,
                loss=loss, edge_density=edges, first_step_ms=times[0] * 1e3)


def step_section(args, out_dir):
    import gc

    _, kind, backend = device_info()
    on_gpu = backend == "gpu"
    shape = SMOKE if args.smoke else SMOLLM2
    dense_impl = "cudnn" if on_gpu else "xla"
    dense_name = f"dense, jax {dense_impl}"
    peak = peak_flops(kind, args.peak_tflops)
    n, _, _ = model_flops_per_token(shape, 1)
    budget = Budget(args.budget)
    notes = [f"device: {kind} ({backend}); peak bf16 dense {fmt(peak and peak / 1e12, '.0f')} TFLOP/s; shape "
             f"{'SmolLM2-135M' if not args.smoke else 'smoke (SmolLM2 block, 2 layers, vocab 512)'}: "
             f"{json.dumps(shape)}; N = {n / 1e6:.1f}M matmul weights; compute {args.dtype}, float32 parameters",
             f"step: Trainer.step_fn of shakespeare_posttrain + SmolLM2 run overrides (density target 1%, PI, "
             f"gate.bias_lr 0.03); random weights and tokens; median of {args.repeats} steps after one warm-up; "
             f"sparse = train.attention=pallas, sampled gates; dense = gate off, attention {dense_impl}",
             "MFU = (6N + 6 L H d_head (T+1)) x tokens/s / peak; MFU needed: LoRA counts 4N (no base-weight "
             "gradients); x dense = tokens/s / the dense step's of the same T and fine-tuning; compile s: XLA's "
             "(a rerun reads JAX's persistent cache when JAX_COMPILATION_CACHE_DIR is set, as smollm2_gpu.sh does); "
             "edge density: the deterministic share of causal pairs kept (gate bias 3 on random weights: ~all)"]
    table = Table(out_dir, "step", "SmolLM2-135M post-training step, one device", [
        "T", "batch", "fine-tuning", "attention", "compile s", "step ms", "tokens/s", "x dense", "MFU",
        "MFU needed", "XLA temp GiB", "edge density", "loss"], notes)
    attention_names = {"pallas": "sparse, sparsejax pallas", "dense": dense_name}
    _dense_attention_patch()
    for mode in args.modes:
        for t in args.seq:
            dense_tps = None
            for attention in args.attention:
                b = max(1, args.tokens // t)
                row = [str(t), str(b), {"lora": "LoRA r16", "full": "full"}[mode], attention_names[attention]]
                if not budget.fits():
                    table.add(row + ["skipped: time budget"] + [""] * 8, dict(t=t, b=b, mode=mode,
                                                                                 attention=attention, skipped=True))
                    continue
                t0 = time.monotonic()
                res = err = None
                while res is None:
                    try:
                        with time_limit(max(budget.left(), 1)):
                            res = run_step_variant(shape, t, b, mode, attention, args.dtype, args.repeats,
                                                   dense_impl)
                    except (Exception, Overtime) as e:  # noqa: BLE001 - the row reports it, the table goes on
                        gc.collect()
                        if is_oom(e) and b > 1:
                            print(f"# T={t} {mode} {attention}: out of memory at batch {b}; halving", flush=True)
                            b //= 2
                            row[1] = str(b)
                            continue
                        err = e
                        if not isinstance(e, Overtime):
                            traceback.print_exc()
                        break
                gc.collect()
                budget.took(time.monotonic() - t0)
                if res is None:
                    table.add(row + [f"failed: {short_error(err, 160)}"] + [""] * 8,
                              dict(t=t, b=b, mode=mode, attention=attention, error=short_error(err, 2000)))
                    continue
                _, flops, needed = model_flops_per_token(shape, t)
                if attention == "dense":
                    dense_tps = res["tokens_per_s"]
                ratio = res["tokens_per_s"] / dense_tps if dense_tps else None
                mfu = flops * res["tokens_per_s"] / peak if peak else None
                mfu_needed = (needed if mode == "lora" else flops) * res["tokens_per_s"] / peak if peak else None
                table.add(row + [fmt(res["compile_s"], ".1f"), fmt(res["step_ms"], ".1f"),
                                 fmt(res["tokens_per_s"], ",.0f"), fmt(ratio, ".2f"),
                                 fmt(mfu and 100 * mfu, ".1f") + ("%" if mfu else ""),
                                 fmt(mfu_needed and 100 * mfu_needed, ".1f") + ("%" if mfu_needed else ""),
                                 fmt(res["temp_mib"] / 1024, ".2f"), fmt(res["edge_density"], ".3f"),
                                 fmt(res["loss"], ".3f")],
                          dict(t=t, b=b, mode=mode, attention=attention, flops_per_token=flops, mfu=mfu,
                               mfu_needed=mfu_needed, ratio_to_dense=ratio, **res))
    table.finish()
    return table


# ------------------------------------------------------------------------------------------------ kernel section
def _authors_naive(paths: list[str]):
    """The authors' plain PyTorch statement of the method (``sparse_attention_naive``: torch only, no helion),
    loaded from its file so that it is there even where helion is not."""
    import importlib.util

    for p in paths:
        f = os.path.join(p, "splash_attention", "sparse_attention.py")
        if os.path.exists(f):
            spec = importlib.util.spec_from_file_location("splash_attention_naive_file", f)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod.sparse_attention_naive
    raise FileNotFoundError(f"no splash_attention/sparse_attention.py under {paths}")


def _authors_kernel(paths: list[str]):
    """``(splash_attention, helion version)`` of the authors' package, or raise why not."""
    from importlib import metadata

    for p in reversed(paths):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    import helion  # noqa: F401 - its absence is the usual reason
    import splash_attention

    try:
        version = metadata.version("helion")
    except metadata.PackageNotFoundError:
        version = getattr(helion, "__version__", "?")
    return splash_attention.splash_attention, version


def _median_ms(fn, block, repeats):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from kernels import median_ms  # benchmarks/kernels.py: two warm-ups, then the median of `repeats` calls

    return median_ms(fn, (), block, repeats)


def kernel_section(args, out_dir):
    import jax
    import jax.numpy as jnp

    import sparsejax as sj

    _, kind, backend = device_info()
    on_gpu = backend == "gpu"
    h, kvh, d = SMOLLM2["n_heads"], SMOLLM2["n_kv_heads"], SMOLLM2["head_dim"]
    groups = h // kvh
    dense_impl = "cudnn" if on_gpu else "xla"
    peak = peak_flops(kind, args.peak_tflops)
    budget = Budget(args.budget)
    try:
        import torch
        tdev = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
        sync = (lambda _=None: torch.cuda.synchronize()) if tdev == "cuda" else (lambda _=None: None)
        torch_why = None
    except Exception as e:  # noqa: BLE001
        torch, tdev, sync, torch_why = None, None, None, short_error(e)
    splash = naive = None
    helion_version = None
    if torch is not None:
        try:
            naive = _authors_naive(args.authors_path)
        except Exception as e:  # noqa: BLE001
            print(f"# the authors' plain formula is not available: {short_error(e)}", flush=True)
        try:
            splash, helion_version = _authors_kernel(args.authors_path)
            authors_why = None
        except Exception as e:  # noqa: BLE001
            authors_why = short_error(e)
            print(f"# the authors' kernel is not available: {authors_why}", flush=True)
    else:
        authors_why = f"no torch: {torch_why}"
    notes = [f"device: {kind} ({backend}); jax {jax.__version__}; torch {torch.__version__ if torch else '—'} "
             f"({tdev}); helion {helion_version or '—'}; peak bf16 dense {fmt(peak and peak / 1e12, '.0f')} TFLOP/s",
             f"fwd+bwd of one causal attention layer, bf16, {h} query / {kvh} key-value heads x {d}, sampled (train) "
             f"gates with one gate bias {KERNEL_BIAS} (sparse rows); batch = {args.kernel_tokens} tokens / T; median "
             f"of {args.repeats} calls after two warm-ups (the first call of each row, compile or autotune, is "
             "'first call s')",
             f"the Helion kernel takes q, k, v of one shape: k and v repeated to {h} heads before the timed call; "
             "torch SDPA: enable_gqa; TFLOP/s and MFU count 3 x 4 B H d_head T(T+1)/2 (fwd + bwd, causal half)",
             f"authors' kernel: {'available' if splash else 'not available: ' + str(authors_why)}"]
    table = Table(out_dir, "kernel", "Attention kernel alone, fwd+bwd at SmolLM2's head shape", [
        "T", "batch", "implementation", "first call s", "fwd+bwd ms", f"x jax {dense_impl} dense", "x Helion",
        "TFLOP/s", "MFU"], notes)
    checks = []

    def jax_fn(impl, q, k, v):
        def loss(qq, kk, vv):
            if impl in ("cudnn", "xla"):
                return jnp.sum(jax.nn.dot_product_attention(qq, kk, vv, is_causal=True, implementation=impl)
                               .astype(jnp.float32))
            out, st = sj.sparse_attention(qq, kk, vv, KERNEL_BIAS, mode="train", seed=KERNEL_SEED,
                                          implementation=impl)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(st.expected_density)
        f = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return lambda: f(q, k, v)

    def torch_fn(kind_, q, k, v):
        leaves = [x.detach().clone().requires_grad_(True) for x in (q, k, v)]

        def step():
            for x in leaves:
                x.grad = None
            qq, kk, vv = leaves
            if kind_ == "sdpa":
                loss = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, is_causal=True,
                                                                        enable_gqa=True).float().sum()
            else:  # the authors' kernel: (q, k, v, bias_gate, causal, sample, return_map, seed)
                out, p_mask, _ = splash(qq, kk, vv, KERNEL_BIAS, True, True, False, KERNEL_SEED)
                loss = out.float().sum() + p_mask.float().sum()
            loss.backward()
            return leaves[0].grad
        return step

    names = {"dense": f"jax dot_product_attention {dense_impl} (dense)", "pallas": "sparsejax pallas (sparse)",
             "sdpa": "torch SDPA (dense)", "helion": "authors' Helion kernel (sparse)"}
    order = list(names)

    def inputs(t):
        b = max(1, args.kernel_tokens // t)
        rng = np.random.default_rng(t)
        qn, kn, vn = (rng.normal(size=(b, t, n, d)).astype(np.float32) for n in (h, kvh, kvh))  # [B, T, H, D]
        x = dict(b=b, numpy=(qn, kn, vn), jax=tuple(jnp.asarray(a, jnp.bfloat16) for a in (qn, kn, vn)))
        if torch is not None:  # [B, H, T, D], the same values (float32 -> bf16 rounds to nearest even in both)
            tq, tk, tv = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1, 3))).to(tdev, torch.bfloat16)
                          for a in (qn, kn, vn))
            x["torch"] = (tq, tk, tv)
            x["torch_rep"] = (tq, tk.repeat_interleave(groups, dim=1), tv.repeat_interleave(groups, dim=1))
        return x

    results = {}  # (t, key) -> ms

    def measure(t, key, x):
        b = x["b"]
        cells = [str(t), str(b), names[key]]
        rec = dict(t=t, b=b, impl=names[key], order=order.index(key))
        if key != "dense" and key != "pallas" and torch is None:
            return table.add(cells + [f"not run: {torch_why}"] + [""] * 5, dict(rec, error=torch_why))
        if key == "helion" and splash is None:
            return table.add(cells + [f"not run: {authors_why}"] + [""] * 5, dict(rec, error=authors_why))
        if not budget.fits():
            return table.add(cells + ["skipped: time budget"] + [""] * 5, dict(rec, skipped=True))
        t0 = time.monotonic()
        try:
            with time_limit(max(budget.left(), 1)):
                fn = {"dense": lambda: jax_fn(dense_impl, *x["jax"]), "pallas": lambda: jax_fn("pallas", *x["jax"]),
                      "sdpa": lambda: torch_fn("sdpa", *x.get("torch", ())),
                      "helion": lambda: torch_fn("helion", *x.get("torch_rep", ()))}[key]()
                block = jax.block_until_ready if key in ("dense", "pallas") else sync
                t1 = time.perf_counter()
                block(fn())
                first = time.perf_counter() - t1
                ms = _median_ms(fn, block, args.repeats)
        except (Exception, Overtime) as e:  # noqa: BLE001 - the row says why, the table goes on
            budget.took(time.monotonic() - t0)
            if not isinstance(e, Overtime) and key != "helion":
                traceback.print_exc()
            table.add(cells + [f"failed: {short_error(e, 160)}"] + [""] * 5, dict(rec, error=short_error(e, 2000)))
            return e
        # the Helion kernel autotunes once (its first call), the JAX rows compile every time
        budget.took(time.monotonic() - t0 - (first if key == "helion" else 0.0))
        results[(t, key)] = ms
        flops = 3 * 4.0 * b * h * d * t * (t + 1) / 2
        dense, helion = results.get((t, "dense")), results.get((t, "helion"))
        tflops = flops / (ms * 1e-3) / 1e12
        table.add(cells + [fmt(first, ".1f"), fmt(ms, ".2f"), fmt(dense and ms / dense, ".2f"),
                           fmt(helion and ms / helion, ".2f"), fmt(tflops, ".3g"),
                           fmt(peak and 100 * tflops * 1e12 / peak, ".1f") + ("%" if peak else "")],
                  dict(rec, first_call_s=first, ms=ms, tflops=tflops))

    # ours and the dense references at every T first, then the authors' kernel at every T (its first call
    # autotunes: if that eats the budget, the other rows are already measured)
    data = {}
    for t in args.kernel_seq:
        data[t] = inputs(t)
        for key in ("dense", "pallas", "sdpa"):
            measure(t, key, data[t])
    for t in args.kernel_seq:
        if isinstance(measure(t, "helion", data[t]), BaseException):
            # one failure (import, compilation, autotuning, time) is enough: no retry at the next T
            splash, authors_why = None, f"failed at T={t} (above)"
            if not on_gpu:
                print("# (expected on CPU: the Helion kernel compiles to Triton for a GPU)", flush=True)
    for rec, cells in zip(table.records, table.rows):  # the ratio to the Helion kernel of the rows before it
        helion = results.get((rec["t"], "helion"))
        if helion and "ms" in rec:
            cells[6] = fmt(rec["ms"] / helion, ".2f")
            rec["x_helion"] = rec["ms"] / helion
    table.sort(lambda rec: (rec["t"], rec["order"]))
    first_inputs = data[args.kernel_seq[0]]["numpy"] if args.kernel_seq else None
    # last, with what is left of the budget (the Helion kernel's eval mode is one more autotuning)
    if torch is not None and (splash or naive) and first_inputs is not None and budget.left() > 15:
        try:
            with time_limit(budget.left() - 5):
                same_method_check(checks, jnp, sj, torch, splash if on_gpu else None, naive, *first_inputs,
                                  groups, tdev)
        except (Exception, Overtime) as e:  # noqa: BLE001
            checks.append(f"stopped: {short_error(e, 200)}")
    table.notes.append("same method on the same inputs, T = " + str(args.kernel_seq[0]) + ", batch 1 (max abs "
                       "difference to sparsejax's kernel): " + ("; ".join(checks) or "not run"))
    table.finish()
    return table


def same_method_check(checks, jnp, sj, torch, splash, naive, qn, kn, vn, groups, tdev, batch=1):
    """Appends to ``checks``: the expected densities (train mode: independent of the noise) and the deterministic
    (eval) outputs of sparsejax's kernel against the authors' plain formula (float32) and, where given, their Helion
    kernel (bf16 inputs, float32 inside, as the timed rows: its bf16 train-mode kernel is the one already tuned), on
    the same bf16-rounded inputs; sparsejax's kernel in float32."""
    qn, kn, vn = (np.asarray(jnp.asarray(x[:batch], jnp.bfloat16).astype(jnp.float32)) for x in (qn, kn, vn))
    q, k, v = (jnp.asarray(x) for x in (qn, kn, vn))
    ours = {}
    for mode in ("train", "eval"):
        out, st = sj.sparse_attention(q, k, v, KERNEL_BIAS, mode=mode, seed=KERNEL_SEED, implementation="pallas")
        ours[mode] = (np.asarray(out).transpose(0, 2, 1, 3), np.asarray(st.expected_density))
    theirs = [("plain formula", naive, torch.float32, ())] if naive is not None else []
    if splash is not None:
        theirs.append(("Helion kernel", splash, torch.bfloat16, (KERNEL_SEED,)))
    for label, fn, dtype, seed in theirs:
        tq, tk, tv = (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1, 3))).to(tdev, dtype)
                      for x in (qn, kn, vn))
        tk, tv = tk.repeat_interleave(groups, dim=1), tv.repeat_interleave(groups, dim=1)
        for mode in ("train", "eval"):
            try:
                with torch.no_grad():
                    out, dens, _ = fn(tq, tk, tv, KERNEL_BIAS, True, mode == "train", False, *seed)
                if mode == "train":
                    dens = dens.float().cpu().numpy()
                    checks.append(f"{label}: expected density {np.max(np.abs(dens - ours['train'][1])):.1e}")
                else:
                    out = out.float().cpu().numpy()
                    checks.append(f"{label}: eval output {np.max(np.abs(out - ours['eval'][0])):.1e} "
                                  f"(|out| <= {np.max(np.abs(out)):.2f})")
            except Exception as e:  # noqa: BLE001
                checks.append(f"{label} ({mode}): failed: {short_error(e, 200)}")


# ------------------------------------------------------------------------------------------------ main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=("step", "kernel", "all"), default="all")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, CPU (Pallas in interpret mode)")
    p.add_argument("--out", default=os.environ.get("OUT", "runs/smollm2_gpu"), help="where the tables go")
    p.add_argument("--budget", type=float, default=None, help="seconds for the section (default: 240 step, 170 "
                   "kernel; smoke 150 / 90)")
    p.add_argument("--seq", type=int, nargs="+", default=None, help="step section contexts (default 64 1024 4096)")
    p.add_argument("--tokens", type=int, default=None, help="tokens a step (default 32768; batch = tokens / T)")
    p.add_argument("--modes", nargs="+", choices=("lora", "full"), default=["lora", "full"])
    p.add_argument("--attention", nargs="+", choices=("dense", "pallas"), default=["dense", "pallas"],
                   help="step section attention (dense first: the ratio column needs it)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--kernel-seq", type=int, nargs="+", default=None, help="kernel section T (default 1024 4096 "
                   "8192)")
    p.add_argument("--kernel-tokens", type=int, default=None, help="kernel section tokens a call (default 16384)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps / calls (default 5 steps, 10 calls)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 dense TFLOP/s (default: by name)")
    p.add_argument("--authors-path", nargs="*", default=[
        os.path.join(ROOT, ".whl", "splash_attention", "src"),
        os.path.join(ROOT, "..", "shared", "anchors", "splash_attention", "src")],
        help="where the authors' splash_attention package lies (first found wins); helion itself comes from "
             "PYTHONPATH (smollm2_gpu.sh installs the carried wheel)")
    args = p.parse_args(argv)
    args.authors_path = [x for x in args.authors_path if os.path.isdir(x)][:1]
    s = args.smoke
    args.seq = args.seq or ([32] if s else [64, 1024, 4096])
    args.tokens = args.tokens or (96 if s else 32768)
    args.kernel_seq = args.kernel_seq or ([128, 256] if s else [1024, 4096, 8192])
    args.kernel_tokens = args.kernel_tokens or (256 if s else 16384)
    if s:
        import jax

        jax.config.update("jax_platforms", "cpu")
    dev, kind, backend = device_info()
    if backend != "gpu" and not s:
        print(f"# warning: backend {backend}, not a GPU: the Pallas kernel runs in interpret mode (slow); use "
              "--smoke on a CPU", flush=True)
    import jax

    print(f"# {kind} ({backend}), jax {jax.__version__}, host {platform.machine()} cpus={os.cpu_count()}, "
          f"{'smoke' if s else 'full'} sizes, out {args.out}", flush=True)
    start = time.monotonic()
    for section in (("step", "kernel") if args.section == "all" else (args.section,)):
        a = argparse.Namespace(**vars(args))
        a.budget = args.budget if args.budget is not None else {("step", False): 240, ("kernel", False): 170,
                                                                 ("step", True): 150, ("kernel", True): 90}[
                                                                     (section, s)]
        a.repeats = args.repeats or ((2 if s else 5) if section == "step" else (2 if s else 10))
        t0 = time.monotonic()
        try:
            (step_section if section == "step" else kernel_section)(a, args.out)
        except (Exception, Overtime):  # noqa: BLE001 - one section failing leaves the other
            traceback.print_exc()
            print(f"# section {section} failed", flush=True)
        print(f"# section {section}: {time.monotonic() - t0:.0f} s", flush=True)
    print(f"# total {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
