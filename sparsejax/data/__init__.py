"""Data sources with deterministic, resumable order: ``batch_at(source, step)`` is a pure function of
(seed, step), so a resumed run sees exactly the batches an uninterrupted run would.

A source has ``len(source)`` rows and ``source.rows(indices) -> {"tokens": int32 [n, T + 1], "mask": float32 [n, T]}``
(``mask`` weights the loss on each target position). Backends: TFDS ``array_record`` builders read with
``as_data_source()`` (no tensorflow needed; :mod:`sparsejax.data.tfds_builders`) and in-memory / numpy-memmap
arrays (:class:`ArraySource`).
"""
from __future__ import annotations

import numpy as np

from .. import seeds


class ArraySource:
    """Rows from numpy arrays (or ``np.memmap``s): ``tokens [N, T + 1]`` and optional ``mask [N, T]``."""

    def __init__(self, tokens: np.ndarray, mask: np.ndarray | None = None):
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise ValueError(f"tokens must be [rows, seq + 1] with seq >= 1, got shape {tokens.shape}")
        if mask is not None and mask.shape != (tokens.shape[0], tokens.shape[1] - 1):
            raise ValueError(f"mask must be [rows, seq] = {(tokens.shape[0], tokens.shape[1] - 1)}, got {mask.shape}")
        self.tokens, self.mask = tokens, mask

    def __len__(self):
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1] - 1

    def rows(self, indices) -> dict:
        idx = np.asarray(indices)
        tokens = np.asarray(self.tokens[idx], np.int32)
        mask = np.ones((len(idx), self.seq_len), np.float32) if self.mask is None else np.asarray(self.mask[idx], np.float32)
        return {"tokens": tokens, "mask": mask}


class Rows:
    """Rows ``[start, stop)`` of another source, renumbered from 0 (the same rows, the same transformations)."""

    def __init__(self, source, start: int, stop: int):
        if not 0 <= start < stop <= len(source):
            raise ValueError(f"rows [{start}, {stop}) are not a non-empty range of a source of {len(source)} rows")
        self.source, self.start, self.stop = source, start, stop

    def __len__(self):
        return self.stop - self.start

    @property
    def seq_len(self) -> int:
        return self.source.seq_len

    def rows(self, indices) -> dict:
        return self.source.rows(np.asarray(indices) + self.start)


SPLITS = ("validation", "aside", "train")  # what an evaluation reads: the held-out split, the rows held aside, or
#                                             the training rows (what train.final=feasible decides on)


def hold_aside(source, share: float):
    """``(rest, aside)``: the last ``share`` of the rows held aside (``data.aside``), the rest to train on."""
    n = len(source)
    cut = n - max(1, int(round(n * share)))
    if cut < 1:
        raise ValueError(f"data.aside={share} of {n} rows leaves none to train on: lower data.aside")
    return Rows(source, 0, cut), Rows(source, cut, n)


class RepeatedPassages:
    """Text with repeated passages (for induction heads): in a share ``share`` of the rows of ``source`` (chosen,
    like everything here, by ``(seed, row)`` alone), a passage of ``min_len`` to ``(T + 1) // 2`` tokens is copied
    to a later place in the same row, overwriting what was there; the model is trained to predict the copy (the
    loss mask is kept). Other rows are the source's. ``vocab``: the passage itself is first replaced by
    tokens drawn uniformly from ``[0, vocab)``, so only its copy is predictable (a much stronger pull towards
    induction heads than text, whose copies bigram statistics already half-predict), and the loss mask drops the
    targets inside that first, unpredictable occurrence (noise with nothing to learn)."""

    def __init__(self, source, share: float, seed: int = 0, min_len: int = 8, vocab: int | None = None):
        if not 0 < share <= 1:
            raise ValueError(f"the share of rows with a repeated passage must be in (0, 1], got {share}")
        if source.seq_len + 1 < 2 * min_len:
            raise ValueError(f"rows of {source.seq_len + 1} tokens cannot hold two passages of {min_len} tokens; "
                             f"use a longer data.seq_len or no repeats")
        if vocab is not None and vocab < 2:
            raise ValueError(f"random passages need a vocabulary of >= 2 tokens, got {vocab}")
        self.source, self.share, self.seed, self.min_len, self.vocab = source, share, seed, min_len, vocab

    def __len__(self):
        return len(self.source)

    @property
    def seq_len(self) -> int:
        return self.source.seq_len

    def rows(self, indices) -> dict:
        batch = self.source.rows(indices)
        tokens, mask, n = batch["tokens"].copy(), batch["mask"].copy(), self.seq_len + 1
        for j, i in enumerate(np.asarray(indices)):
            rng = seeds.passage_rng(self.seed, i)
            if rng.random() >= self.share:
                continue
            length = int(rng.integers(self.min_len, n // 2 + 1))
            a = int(rng.integers(0, n - 2 * length + 1))        # the passage ...
            b = int(rng.integers(a + length, n - length + 1))   # ... and where its copy goes
            if self.vocab is not None:
                tokens[j, a:a + length] = rng.integers(0, self.vocab, length)
                mask[j, max(a - 1, 0):a + length - 1] = 0.0  # target t is token t + 1
            tokens[j, b:b + length] = tokens[j, a:a + length]
        return {**batch, "tokens": tokens, "mask": mask}


def batch_indices(n_rows: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Row indices of batch ``step``: epochs are independent permutations drawn from ``(seed, epoch)``."""
    if batch_size > n_rows:
        raise ValueError(f"batch size {batch_size} is larger than the data ({n_rows} rows); use a smaller batch or "
                         "more data")
    per_epoch = n_rows // batch_size  # drop the ragged tail of each epoch
    epoch, within = divmod(step, per_epoch)
    perm = seeds.data_order(seed, epoch).permutation(n_rows)
    return np.sort(perm[within * batch_size:(within + 1) * batch_size])


def batch_at(source, step: int, batch_size: int, seed: int = 0, rows: slice = slice(None)) -> dict:
    """Batch number ``step`` of a source (deterministic in ``seed`` and ``step``); ``rows``: only that part of it
    is read (one process's share of a global batch)."""
    return source.rows(batch_indices(len(source), step, batch_size, seed)[rows])
