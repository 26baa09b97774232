"""The paper's toy task: two-digit addition ``ab+cd=`` followed by the 5-digit zero-padded sum (53+21= -> 00074).

Vocabulary: digits 0-9 are tokens 0-9, ``+`` is 10, ``=`` is 11 (12 tokens). A row is the 11 tokens
``a b + c d = s1 s2 s3 s4 s5``; the loss mask keeps only the 5 answer positions. The 10,000 problems are split
once, by a fixed permutation, into 9,000 train and 1,000 validation rows.

With ``bos=True`` (``data.bos``) every row starts with a beginning-of-sequence token, 12 (13 tokens; rows of 12):
a key at a fixed token that every query sees, as real LMs have. A model without absolute positions (RoPE) can
take its position from the attention weight such a key gets, one edge a token (docs/controllers.md, sixteenth
round).
"""
from __future__ import annotations

import numpy as np

from .. import seeds
from . import ArraySource

PLUS, EQUALS, VOCAB = 10, 11, 12
BOS = 12  # data.bos: the first token of every row (a 13-token vocabulary)
PROMPT_LEN, ANSWER_LEN = 6, 5  # without the BOS token


def vocab(bos: bool = False) -> int:
    return VOCAB + int(bos)


def encode(a: int, b: int, bos: bool = False) -> np.ndarray:
    digits = [BOS] * bos + [a // 10, a % 10, PLUS, b // 10, b % 10, EQUALS] + [int(ch) for ch in f"{a + b:05d}"]
    return np.asarray(digits, np.int32)


def decode(tokens) -> str:
    """One character a token: digits, ``+``, ``=``, and ``^`` for the BOS token."""
    names = {PLUS: "+", EQUALS: "=", BOS: "^"}
    return "".join(names.get(int(t), str(int(t))) for t in tokens)


def all_problems(bos: bool = False) -> np.ndarray:
    """``[10000, 11]`` int32 (``[10000, 12]`` with ``bos``): every (a, b) with 0 <= a, b <= 99, row ``100 a + b``."""
    return np.stack([encode(a, b, bos) for a in range(100) for b in range(100)])


def answer_mask(n: int, bos: bool = False) -> np.ndarray:
    prompt = PROMPT_LEN + int(bos)
    mask = np.zeros((n, prompt + ANSWER_LEN - 1), np.float32)
    mask[:, prompt - 1:] = 1.0  # the targets after '=' are the answer digits (positions 5..9, 6..10 with bos)
    return mask


def split(name: str, bos: bool = False) -> np.ndarray:
    if name not in ("train", "validation"):
        raise ValueError(f"unknown split {name!r}; use 'train' or 'validation'")
    perm = seeds.addition_split().permutation(10_000)
    return all_problems(bos)[np.sort(perm[:9000] if name == "train" else perm[9000:])]


def source(name: str, bos: bool = False) -> ArraySource:
    rows = split(name, bos)
    return ArraySource(rows, answer_mask(len(rows), bos))



def carries(a: int, b: int) -> int:
    """Number of carries in a + b (0, 1 or 2)."""
    return int((a % 10) + (b % 10) >= 10) + int((a // 10) + (b // 10) + ((a % 10) + (b % 10) >= 10) >= 10)


def greedy_exact_match(logits_fn, rows: np.ndarray) -> float:
    """Share of problems whose 5 answer digits are all right under greedy autoregressive decoding.

    ``rows``: ``[N, 11]`` problems (``[N, 12]`` with a BOS token); ``logits_fn(tokens [N, 10 or 11]) -> logits
    [N, T, vocab]`` is a causal model; the prompt (``ab+cd=``, after the BOS token if any) is given and each answer
    digit is the argmax given the model's own earlier digits (positions after the current one are zero-padded,
    which a causal model never sees).
    """
    rows = np.asarray(rows)
    prompt = rows.shape[1] - ANSWER_LEN
    if prompt not in (PROMPT_LEN, PROMPT_LEN + 1):
        raise ValueError(f"rows of {rows.shape[1]} tokens are not addition problems ({PROMPT_LEN + ANSWER_LEN}, or "
                         f"{PROMPT_LEN + ANSWER_LEN + 1} with a BOS token)")
    tokens = np.zeros((len(rows), rows.shape[1] - 1), np.int32)
    tokens[:, :prompt] = rows[:, :prompt]
    answer = np.zeros((len(rows), ANSWER_LEN), np.int32)
    for k in range(ANSWER_LEN):
        answer[:, k] = np.argmax(np.asarray(logits_fn(tokens))[:, prompt - 1 + k], -1)
        if prompt + k < tokens.shape[1]:
            tokens[:, prompt + k] = answer[:, k]
    return float(np.mean(np.all(answer == rows[:, prompt:], axis=1)))
