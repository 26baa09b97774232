"""Held-out evaluation: CE and deterministic edge counts summed on device, one host transfer per evaluation."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import seeds, sharding
from ..data import SPLITS, batch_at
from .step import make_eval_step


def eval_batches(src, batch_size: int, count: int, mesh):
    """The first ``count`` validation batches (fixed order, ``seeds.EVAL_ORDER``), placed on the mesh's batch
    sharding."""
    n = min(count, max(1, len(src) // batch_size))
    shard = sharding.batch_sharding(mesh)
    for i in range(n):
        yield sharding.place_batch(lambda rows, i=i: batch_at(src, i, batch_size, seed=seeds.EVAL_ORDER, rows=rows),
                                   batch_size, shard)


def edge_stats(per_head: np.ndarray) -> dict:
    """Edge density overall / per layer / per head from a ``[L, H]`` share of causal pairs kept."""
    per_head = np.asarray(per_head, np.float64)
    return {"edge_density": float(per_head.mean()), "edge_density_per_layer": per_head.mean(1).tolist(),
            "edge_density_per_head": per_head.tolist()}


def tail_mean(values, share: float) -> float:
    """The mean of the largest ``ceil(share * n)`` of ``n`` values (at least one): the tail of a loss distribution
    (its conditional value at risk at level ``1 - share``). ``share=0.02`` of 512 per-problem losses: the worst 11."""
    values = np.sort(np.asarray(values, np.float64).ravel())
    if not values.size or not 0 < share <= 1:
        raise ValueError(f"tail_mean needs values and a share in (0, 1], got {values.size} values, share {share}")
    return float(values[-max(1, math.ceil(share * values.size - 1e-9)):].mean())


def evaluate(eval_step, trainable, frozen, batches, *, gated: bool, tail: float | None = None,
             per_batch: bool = False) -> dict:
    """Mean held-out CE over the batches and (when gated) the deterministic edge density; ``tail``: also
    ``tail_ce``, the mean CE of the worst ``tail`` share of the sequences (:func:`tail_mean`); ``per_batch``: also
    ``eval_ce_per_batch``, each batch's mean CE in order (for paired comparisons of two models on the same
    batches)."""
    ces, seqs, counts, rows, t = [], [], None, 0, 0
    for batch in batches:
        out = eval_step(trainable, frozen, batch)
        ces.append(out["ce"])
        if tail is not None:
            seqs.append(out["sequence_ce"])
        counts = out["edge_counts"] if counts is None else counts + out["edge_counts"]
        rows, t = rows + batch["tokens"].shape[0], batch["tokens"].shape[1] - 1
    ces, seqs, counts = jax.device_get((ces, seqs, counts))  # the only host transfer
    result = {"eval_ce": float(np.mean([float(c) for c in ces]))}
    if per_batch:
        result["eval_ce_per_batch"] = [float(c) for c in ces]
    if tail is not None:
        result["tail_ce"] = tail_mean(np.concatenate([np.asarray(s) for s in seqs]), tail)
    if gated:
        result.update(edge_stats(np.asarray(counts, np.float64) / (rows * (t * (t + 1) // 2))))
    return result


def summary(rec: dict) -> dict:
    """A record without its per-head table (for printing and for ``best.json``)."""
    return {k: v for k, v in rec.items() if k != "edge_density_per_head"}


def evaluate_checkpoint(cfg, checkpoint, split: str = "validation", per_batch: bool = False) -> dict:
    """Held-out CE and (when the checkpoint is gated) edge density of a saved model on ``cfg``'s validation data
    (``split="aside"``: on the training rows a post-training holds aside, ``data.aside``), with no training state:
    the model, the batches and the eval step only. ``per_batch``: also each batch's CE."""
    with checkpoint_evaluator(cfg, checkpoint, split) as (run, model):
        return run(None if model.gate is None else model.gate.bias, per_batch=per_batch)


@contextlib.contextmanager
def checkpoint_evaluator(cfg, checkpoint, split: str = "validation"):
    """``(run, model)``: ``run(gate_bias)`` evaluates the saved model with that ``[L, H]`` gate bias (the gate's
    own, or a variant: the bias is data, so every variant shares one compilation) on the first
    ``cfg.data.eval_batches`` batches of ``split`` (:data:`SPLITS`; ``"train"``: the training rows less any held
    aside, in the evaluation order — the batches ``train.final=feasible`` decides on); ``run(..., tail=share)`` also
    gives the tail of the per-sequence CE (:func:`evaluate`); ``model`` as loaded."""
    import tempfile

    from ..checkpoints import from_pretrained
    from ..data import hold_aside
    from .data import build_data
    from .state import StepSpec, check_data_fits

    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    if split == "aside" and not cfg.data.aside:
        raise ValueError("split='aside' evaluates the rows a post-training holds aside, but data.aside is 0 in this "
                         "config: pass the run's config.yaml or set data.aside to the share it held aside")
    model = from_pretrained(checkpoint)
    config = model.config.replace(dtype=cfg.model.dtype, remat="none")
    with tempfile.TemporaryDirectory() as tmp:  # TFDS data is prepared in a scratch directory
        train_src, val_src, tokenizer = build_data(cfg, Path(tmp))
        check_data_fits(cfg, config, train_src, val_src, tokenizer)
        mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
        gate = None if model.gate is None else dataclasses.replace(model.gate, bias=None)
        spec = StepSpec(config=config, gate=gate, attention=cfg.train.attention,
                        rules=sharding.parse_rules(cfg.mesh.rules))
        trainable = {"params": model.params}
        step = jax.jit(make_eval_step(spec))
        with jax.set_mesh(mesh):
            rest, aside = hold_aside(train_src, cfg.data.aside) if cfg.data.aside else (train_src, None)
            src = {"validation": val_src, "aside": aside, "train": rest}[split]
            batches = list(eval_batches(src, cfg.data.batch_size, cfg.data.eval_batches, mesh))  # reused

            def run(gate_bias, per_batch: bool = False, tail: float | None = None):
                frozen = {} if model.gate is None else {"gate_bias": jnp.asarray(gate_bias, jnp.float32)}
                return {**evaluate(step, trainable, frozen, batches, gated=model.gate is not None,
                                   per_batch=per_batch, tail=tail), "gated": model.gate is not None}

            yield run, model
