"""The paper's toy task: two-digit addition ``ab+cd=`` followed by the 5-digit zero-padded sum (53+21= -> 00074).

Vocabulary: digits 0-9 are tokens 0-9, ``+`` is 10, ``=`` is 11 (12 tokens). A row is the 11 tokens
``a b + c d = s1 s2 s3 s4 s5``; the loss mask keeps only the 5 answer positions. The 10,000 problems are split
once, by a fixed permutation, into 9,000 train and 1,000 validation rows.
"""
from __future__ import annotations

import numpy as np

from .. import seeds
from . import ArraySource

PLUS, EQUALS, VOCAB = 10, 11, 12
PROMPT_LEN, ANSWER_LEN = 6, 5


def encode(a: int, b: int) -> np.ndarray:
    digits = [a // 10, a % 10, PLUS, b // 10, b % 10, EQUALS] + [int(ch) for ch in f"{a + b:05d}"]
    return np.asarray(digits, np.int32)


def decode(tokens) -> str:
    return "".join("+" if t == PLUS else "=" if t == EQUALS else str(int(t)) for t in tokens)


def all_problems() -> np.ndarray:
    """``[10000, 11]`` int32: every (a, b) with 0 <= a, b <= 99."""
    return np.stack([encode(a, b) for a in range(100) for b in range(100)])


def answer_mask(n: int) -> np.ndarray:
    mask = np.zeros((n, PROMPT_LEN + ANSWER_LEN - 1), np.float32)
    mask[:, PROMPT_LEN - 1:] = 1.0  # targets at positions 5..9 are the answer digits
    return mask


def split(name: str) -> np.ndarray:
    perm = seeds.addition_split().permutation(10_000)
    rows = all_problems()[np.sort(perm[:9000] if name == "train" else perm[9000:])]
    if name not in ("train", "validation"):
        raise ValueError(f"unknown split {name!r}; use 'train' or 'validation'")
    return rows


def source(name: str) -> ArraySource:
    rows = split(name)
    return ArraySource(rows, answer_mask(len(rows)))


def carries(a: int, b: int) -> int:
    """Number of carries in a + b (0, 1 or 2)."""
    return int((a % 10) + (b % 10) >= 10) + int((a // 10) + (b // 10) + ((a % 10) + (b % 10) >= 10) >= 10)


def greedy_exact_match(logits_fn, rows: np.ndarray) -> float:
    """Share of problems whose 5 answer digits are all right under greedy autoregressive decoding.

    ``logits_fn(tokens [N, 10]) -> logits [N, 10, vocab]`` is a causal model; the prompt ``ab+cd=`` is given and
    each answer digit is the argmax given the model's own earlier digits (positions after the current one are
    zero-padded, which a causal model never sees).
    """
    rows = np.asarray(rows)
    tokens = np.zeros((len(rows), PROMPT_LEN + ANSWER_LEN - 1), np.int32)
    tokens[:, :PROMPT_LEN] = rows[:, :PROMPT_LEN]
    answer = np.zeros((len(rows), ANSWER_LEN), np.int32)
    for k in range(ANSWER_LEN):
        answer[:, k] = np.argmax(np.asarray(logits_fn(tokens))[:, PROMPT_LEN - 1 + k], -1)
        if PROMPT_LEN + k < tokens.shape[1]:
            tokens[:, PROMPT_LEN + k] = answer[:, k]
    return float(np.mean(np.all(answer == rows[:, PROMPT_LEN:], axis=1)))
