"""The (post-)training loop: data -> model + gates -> objective -> constrained optimiser -> checkpoints.

``Trainer(cfg, run_dir).fit()`` runs ``cfg.train.steps`` steps of one jitted step on a (data, fsdp, tensor) mesh,
resuming from the newest orbax checkpoint in ``run_dir/checkpoints`` if there is one. Pretraining is the same loop
with ``gate.enabled=False`` and ``constraint.method="none"``. Writes ``run_dir/metrics.jsonl``, ``config.yaml``,
``run_dir/tensorboard`` (event files), ``run_dir/model`` (a Hugging Face directory, plus ``sparsejax_gate.json``
when gated) and, for text, the tokenizer.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml

from . import constrained, objective, sharding
from .checkpoints import Model, from_pretrained, save_pretrained
from .config import RunConfig, to_dict
from .data import batch_at
from .gates import Gate
from .models import ModelConfig, forward, init_params


class NonFiniteError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ set-up pieces
def build_data(cfg: RunConfig, run_dir: Path):
    """``(train, validation, tokenizer or None)`` for the configured task (nothing is written unless TFDS)."""
    d = cfg.data
    if d.kind == "addition":
        from .data import addition

        if d.backend == "tfds":
            from .data import tfds_builders

            srcs = tfds_builders.prepare("addition", run_dir / "tfds")
            return srcs["train"], srcs["validation"], None
        return addition.source("train"), addition.source("validation"), None
    if d.kind != "text":
        raise ValueError(f"data.kind must be 'addition' or 'text', got {d.kind!r}")
    from .data import text

    if d.path is None:
        raise ValueError("data.path is required for text data (a .txt file, a directory, or 'shakespeare')")
    path = text.shakespeare_dir() if d.path == "shakespeare" else Path(d.path)
    files = text.corpus_files(path)
    tok_path = run_dir / "tokenizer.json"
    if d.tokenizer is not None:
        tokenizer = text.load_tokenizer(d.tokenizer)
    elif tok_path.exists():  # a resumed run keeps its tokenizer
        tokenizer = text.load_tokenizer(tok_path)
    else:
        tokenizer = text.train_tokenizer(files, d.bpe_vocab)
    if d.backend == "tfds":
        from .data import tfds_builders

        tok_path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(tok_path))
        srcs = tfds_builders.prepare("text", run_dir / "tfds", files=files, tokenizer_path=tok_path, seq_len=d.seq_len)
        return srcs["train"], srcs["validation"], tokenizer
    train, val = text.text_sources(text.encode_files(files, tokenizer), d.seq_len)
    return train, val, tokenizer


def build_model(cfg: RunConfig) -> Model:
    m = cfg.model
    if m.checkpoint is not None:
        model = from_pretrained(m.checkpoint)
        model.config = model.config.replace(dtype=m.dtype, remat=m.remat)
        return model
    hd = m.d_model // m.n_heads
    family = dict(family=m.family)
    if m.family == "gpt2":
        family.update(norm="layernorm", mlp="gelu", activation="gelu_tanh", position="learned", qkv_bias=True,
                      out_bias=True, mlp_bias=True, tie_embeddings=True)
    config = ModelConfig(vocab_size=m.vocab_size, d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads,
                         n_kv_heads=m.n_kv_heads or m.n_heads, head_dim=hd, d_ff=m.d_ff, max_position=m.max_position,
                         dtype=m.dtype, remat=m.remat, **family)
    return Model(config, init_params(config, jax.random.PRNGKey(cfg.train.seed)))


def gate_bias_init(cfg: RunConfig, config: ModelConfig):
    shape = {"model": (), "layer": (config.n_layers,), "head": (config.n_layers, config.n_heads)}.get(cfg.gate.per)
    if shape is None:
        raise ValueError(f"gate.per must be 'model', 'layer' or 'head', got {cfg.gate.per!r}")
    return jnp.full(shape, cfg.gate.bias, jnp.float32)


def edge_stats(adjacency_by_layer: list) -> dict:
    """Deterministic edge density over causal pairs: overall, per layer, per head (from [B, H, T, T] bools)."""
    per_head = []
    for adj in adjacency_by_layer:
        t = adj.shape[-1]
        causal = np.tril(np.ones((t, t), bool))
        per_head.append(np.asarray(adj)[..., causal].mean(axis=(0, 2)))
    per_head = np.stack(per_head)
    return {"edge_density": float(per_head.mean()), "edge_density_per_layer": per_head.mean(1).tolist(),
            "edge_density_per_head": per_head.tolist()}


# ------------------------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, progress: bool = True):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.train_src, self.val_src, self.tokenizer = build_data(cfg, self.run_dir)
        model = build_model(cfg)
        self.config = model.config
        from .data import addition

        vocab_needed = addition.VOCAB if self.tokenizer is None else self.tokenizer.get_vocab_size()
        if vocab_needed > self.config.vocab_size:
            raise ValueError(f"the tokenizer has {vocab_needed} tokens but the model's embedding has "
                             f"{self.config.vocab_size}; set model.vocab_size >= {vocab_needed} or data.bpe_vocab "
                             f"<= {self.config.vocab_size}")
        seq = self.train_src.seq_len
        if seq > self.config.max_position:
            raise ValueError(f"data.seq_len={seq} is longer than the model's max_position={self.config.max_position};"
                             f" lower data.seq_len or raise model.max_position")
        for name, src in (("training", self.train_src), ("validation", self.val_src)):
            if len(src) < cfg.data.batch_size:
                raise ValueError(f"the {name} data has {len(src)} rows, fewer than one batch of {cfg.data.batch_size}; "
                                 "use a smaller data.batch_size or more data")
        self.mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
        if cfg.data.batch_size % (cfg.mesh.data * cfg.mesh.fsdp):
            raise ValueError(f"data.batch_size={cfg.data.batch_size} must be divisible by mesh.data x mesh.fsdp")
        self.gated = cfg.gate.enabled
        g = cfg.gate
        self.gate_static = dict(family=g.family, temperature=g.temperature, stretch=tuple(g.stretch))
        if model.gate is not None:  # a checkpoint's own gate (sparsejax_gate.json) wins over the config's family
            self.gate_static = dict(family=model.gate.family, temperature=model.gate.temperature,
                                    stretch=model.gate.stretch)
        t = cfg.train
        self.base = None
        if t.lora_rank > 0:  # LoRA: the base weights are frozen, only the adapters (and maybe the bias) train
            from . import lora

            self.base = jax.device_put(model.params, sharding.param_shardings(model.params, self.mesh))
            trainable = {"lora": lora.init_lora(model.params, t.lora_modules, t.lora_rank,
                                                jax.random.PRNGKey(t.seed + 1))}
        else:
            trainable = {"params": model.params}
        self.fixed_bias = None
        if self.gated:
            bias = model.gate.bias if model.gate is not None else gate_bias_init(cfg, self.config)
            if g.learnable:
                trainable["gate_bias"] = bias
            else:
                self.fixed_bias = bias
        # the frozen dense teacher: its own buffers (the trainable ones are donated to each step)
        self.teacher = jax.tree.map(lambda x: jnp.array(x, copy=True), model.params) if cfg.train.distill > 0 else None
        self.param_shardings = {"params": sharding.param_shardings(model.params, self.mesh)} if self.base is None \
            else {"lora": jax.tree.map(lambda _: sharding.replicated(self.mesh), trainable["lora"])}
        if "gate_bias" in trainable:
            self.param_shardings["gate_bias"] = sharding.replicated(self.mesh)
        trainable = jax.device_put(trainable, self.param_shardings)
        self._step = jax.jit(self._train_step, donate_argnums=0)
        self._eval = jax.jit(self._eval_batch, static_argnames=("dense",))
        self.optimizer = self._optimizer()
        self.tau, self.multiplier = None, None
        c = cfg.constraint
        if self.gated and c.method != "none":
            if c.method not in ("geco", "dual_ascent", "penalty"):
                raise ValueError(f"constraint.method must be 'geco', 'dual_ascent', 'penalty' or 'none', got "
                                 f"{c.method!r}")
            self.tau = c.tau if c.tau is not None else self.evaluate(trainable, dense=True)["eval_ce"] + c.slack
            if c.method == "geco":
                self.multiplier = constrained.geco(self.tau, beta_init=c.beta_init, eta=c.eta, alpha=c.alpha, beta_min=c.beta_min,
                                                   relative=c.relative, max_log_step=c.max_log_step)
            elif c.method == "dual_ascent":
                self.multiplier = constrained.dual_ascent(self.tau, lr=c.lr, kp=c.kp)
        self.state = {"trainable": trainable, "opt_state": self.optimizer.init(trainable),
                      "mult_state": self.multiplier.init(None) if self.multiplier else {},
                      "step": jnp.zeros((), jnp.int32), "bad_steps": jnp.zeros((), jnp.int32),
                      "total_bad_steps": jnp.zeros((), jnp.int32)}

    # -- pieces ----------------------------------------------------------------------------------------------
    def _optimizer(self):
        t = self.cfg.train
        schedule = optax.warmup_cosine_decay_schedule(0.0, t.lr, max(t.warmup, 1), max(t.steps, t.warmup + 1),
                                                      end_value=t.lr * 0.1) if t.warmup else t.lr
        opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), optax.adamw(schedule, weight_decay=t.weight_decay))
        return optax.MultiSteps(opt, t.grad_accum) if t.grad_accum > 1 else opt

    def params_of(self, trainable) -> dict:
        """The model's parameters: the trained ones, or the frozen base merged with the LoRA adapters."""
        if self.base is None:
            return trainable["params"]
        from . import lora

        return lora.merge(self.base, trainable["lora"], self.cfg.train.lora_alpha)

    def gate_of(self, trainable) -> Gate | None:
        if not self.gated:
            return None
        bias = trainable["gate_bias"] if "gate_bias" in trainable else self.fixed_bias
        return Gate(bias, **self.gate_static)

    def _loss(self, trainable, batch, seed, weights):
        tokens = batch["tokens"]
        logits, aux = forward(self.config, self.params_of(trainable), tokens[:, :-1], self.gate_of(trainable),
                              mode="train", seed=seed)
        ce = objective.cross_entropy(logits, tokens[:, 1:], batch["mask"])
        density = objective.density_penalty(aux) if self.gated else jnp.zeros(())
        w_ce, w_density = weights
        loss = w_ce * ce + w_density * density
        if self.teacher is not None:
            teacher_logits, _ = forward(self.config, self.teacher, tokens[:, :-1])
            loss = loss + self.cfg.train.distill * objective.distillation_kl(logits, teacher_logits)
        return loss, (ce, density)

    def _weights(self, mult_state):
        if self.multiplier is None:
            beta = self.cfg.constraint.beta_init if self.gated else 0.0
            return jnp.ones(()), jnp.asarray(beta, jnp.float32)
        return constrained.loss_weights(mult_state)

    def _train_step(self, state, batch, seed):
        weights = self._weights(state["mult_state"])
        (loss, (ce, density)), grads = jax.value_and_grad(self._loss, has_aux=True)(state["trainable"], batch, seed,
                                                                                   weights)
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["trainable"])
        trainable = optax.apply_updates(state["trainable"], updates)
        mult_state = state["mult_state"]
        if self.multiplier is not None:
            _, mult_state = self.multiplier.update(None, mult_state, constraint=ce)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # skip bad steps
        bad = jnp.where(finite, 0, state["bad_steps"] + 1)
        new = {"trainable": keep(trainable, state["trainable"]), "opt_state": keep(opt_state, state["opt_state"]),
               "mult_state": keep(mult_state, state["mult_state"]), "step": state["step"] + 1, "bad_steps": bad,
               "total_bad_steps": state["total_bad_steps"] + (~finite).astype(jnp.int32)}
        return new, {"loss": loss, "ce": ce, "density": density, "finite": finite}

    def _eval_batch(self, trainable, batch, *, dense: bool = False):
        """CE and, when gated, the per-layer adjacency ``[B, H, T, T]`` of one batch in eval mode."""
        tokens = batch["tokens"]
        gate = None if dense else self.gate_of(trainable)
        logits, aux = forward(self.config, self.params_of(trainable), tokens[:, :-1], gate, mode="eval",
                              capture="attn.hook_adjacency" if gate is not None else None)
        ce = objective.cross_entropy(logits, tokens[:, 1:], batch["mask"])
        adj = [aux["captures"][f"blocks.{l}.attn.hook_adjacency"] for l in range(self.config.n_layers)] \
            if gate is not None else []
        return ce, adj

    def batches(self, src, count: int):
        bs = self.cfg.data.batch_size
        n = min(count, max(1, len(src) // bs))
        shard = sharding.batch_sharding(self.mesh)
        for i in range(n):
            yield jax.device_put(batch_at(src, i, bs, seed=0), shard)

    def evaluate(self, trainable=None, *, dense: bool = False) -> dict:
        """Held-out CE and (when gated) deterministic edge density overall / per layer / per head."""
        trainable = self.state["trainable"] if trainable is None else trainable
        ces, adjs = [], []
        with jax.set_mesh(self.mesh):
            for batch in self.batches(self.val_src, self.cfg.data.eval_batches):
                ce, adj = self._eval(trainable, batch, dense=dense)
                ces.append(float(ce))
                adjs.append([np.asarray(a) for a in adj])
        out = {"eval_ce": float(np.mean(ces))}
        if adjs and adjs[0]:
            out.update(edge_stats([np.concatenate([a[l] for a in adjs]) for l in range(self.config.n_layers)]))
        return out

    # -- checkpoints -----------------------------------------------------------------------------------------
    def _manager(self):
        import orbax.checkpoint as ocp

        return ocp.CheckpointManager(self.run_dir.absolute() / "checkpoints",
                                     options=ocp.CheckpointManagerOptions(max_to_keep=self.cfg.train.keep, create=True))

    def _save(self, manager, step: int):
        import orbax.checkpoint as ocp

        manager.save(step, args=ocp.args.StandardSave(self.state))
        manager.wait_until_finished()

    def _restore(self, manager) -> bool:
        import orbax.checkpoint as ocp

        latest = manager.latest_step()
        if latest is None:
            return False
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state)
        self.state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        return True

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.tokenizer is not None:
            self.tokenizer.save(str(self.run_dir / "tokenizer.json"))
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        metrics_path = self.run_dir / "metrics.jsonl"
        manager = self._manager()
        resumed = self._restore(manager)
        start = int(self.state["step"])
        if not resumed:
            metrics_path.write_text("")
        log = metrics_path.open("a")
        from tensorboardX import SummaryWriter

        board = SummaryWriter(str(self.run_dir / "tensorboard"))

        def emit(rec: dict):  # one record to the JSONL file and to TensorBoard
            log.write(json.dumps(rec) + "\n")
            log.flush()
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    board.add_scalar(k, v, rec["step"])
            for l, v in enumerate(rec.get("edge_density_per_layer", [])):
                board.add_scalar(f"edge_density_layer_{l}", v, rec["step"])

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.train.steps, initial=start, desc="post-train" if self.gated else "train",
                       dynamic_ncols=True)
        shard = sharding.batch_sharding(self.mesh)
        tokens_per_step = cfg.data.batch_size * self.train_src.seq_len
        t0, last = time.perf_counter(), start
        with jax.set_mesh(self.mesh):
            for step in range(start, cfg.train.steps):
                batch = jax.device_put(batch_at(self.train_src, step, cfg.data.batch_size, cfg.data.seed), shard)
                seed = jnp.uint32((cfg.train.seed * 1_000_003 + step) % 2**32)
                self.state, out = self._step(self.state, batch, seed)
                if int(self.state["bad_steps"]) >= cfg.train.max_bad_steps:
                    log.close()
                    board.close()
                    raise NonFiniteError(f"{cfg.train.max_bad_steps} consecutive non-finite steps (last at step "
                                         f"{step}); lower train.lr or check the data")
                done = step + 1
                if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                    now = time.perf_counter()
                    rec = {"step": done, "loss": float(out["loss"]), "ce": float(out["ce"]),
                           "expected_density": float(out["density"]),
                           "tokens_per_s": tokens_per_step * (done - last) / max(now - t0, 1e-9),
                           "skipped_steps": int(self.state["total_bad_steps"])}
                    if self.multiplier is not None:
                        rec.update({k: float(v) for k, v in constrained.metrics(self.state["mult_state"]).items()})
                    t0, last = now, done
                    emit(rec)
                    if bar is not None:
                        bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("ce", "expected_density", "beta", "lambda")
                                         if k in rec})
                if cfg.train.eval_every and done % cfg.train.eval_every == 0 and done != cfg.train.steps:
                    rec = {"step": done, **self.evaluate()}
                    emit(rec)
                    self._keep_best(rec)
                if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0:
                    self._save(manager, done)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        final = {"step": int(self.state["step"]), **self.evaluate()}
        if self.tau is not None:
            final["tau"] = float(self.tau)
            self._keep_best(final)
        emit({**final, "final": True})
        log.close()
        board.close()
        if int(self.state["step"]) not in (manager.all_steps() or []):
            self._save(manager, int(self.state["step"]))
        self.export(self.run_dir / "model")
        return final

    def _keep_best(self, rec: dict):
        """Export the sparsest model so far whose held-out CE meets the constraint to ``run_dir/best_model``."""
        if self.tau is None or "edge_density" not in rec or rec["eval_ce"] > self.tau:
            return
        best_file = self.run_dir / "best.json"
        best = json.loads(best_file.read_text()) if best_file.exists() else None
        if best is None or rec["edge_density"] < best["edge_density"]:
            self.export(self.run_dir / "best_model")
            tmp = best_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({k: v for k, v in rec.items() if k != "edge_density_per_head"}))
            tmp.replace(best_file)

    def export(self, path: Path):
        trainable = jax.device_get(self.state["trainable"])
        params = jax.device_get(self.params_of(trainable))
        save_pretrained(Model(self.config.replace(dtype="float32", remat="none"), params,
                              self.gate_of(trainable)), path)
