"""The configured data: training and validation sources and the tokenizer, from ``cfg.data`` (the pieces are in
``sparsejax/data/``; this picks and joins them for a run, and for whatever re-reads a run's data, e.g. the report)."""
from __future__ import annotations

from pathlib import Path

from .. import seeds
from ..checkpoints.hf import TOKENIZER_FILE
from ..config import RunConfig
from .rundir import RunDir

__all__ = ["build_data", "row_bos"]

KINDS = ("addition", "text")  # data.kind
BACKENDS = ("array", "tfds")  # data.backend: in memory, or array_record files under the run folder
REPEAT_TOKENS = ("text", "random")  # data.repeat_tokens: the repeated passage is from the row, or uniform tokens


def build_data(cfg: RunConfig, run_dir):
    """``(train, validation, tokenizer or None)`` for the configured task. ``run_dir`` (a path or a
    :class:`~sparsejax.train.rundir.RunDir`): where a resumed text run's ``tokenizer.json`` is read and where TFDS
    data is prepared (nothing is written unless TFDS; a scratch directory will do to read a run's data)."""
    run_dir = RunDir.of(run_dir)
    d = cfg.data
    if d.kind == "addition":
        from ..data import addition

        if d.backend == "tfds":
            from ..data import tfds_builders

            srcs = tfds_builders.prepare("addition", run_dir.tfds)
            return srcs["train"], srcs["validation"], None
        return addition.source("train", bool(d.bos)), addition.source("validation", bool(d.bos)), None
    if d.kind != "text":
        raise ValueError(f"data.kind must be {' or '.join(map(repr, KINDS))}, got {d.kind!r}")
    from ..data import text

    if d.path is None:
        raise ValueError("data.path is required for text data (a .txt file, a directory, or 'shakespeare')")
    path = text.shakespeare_dir() if d.path == "shakespeare" else Path(d.path)
    files = text.corpus_files(path)
    tok_path = run_dir.tokenizer
    ckpt_tok = Path(cfg.model.checkpoint) / TOKENIZER_FILE if cfg.model.checkpoint else None
    if d.tokenizer is not None:
        tokenizer = text.load_tokenizer(d.tokenizer)
    elif ckpt_tok is not None and ckpt_tok.exists():  # a checkpoint carries its tokenizer
        tokenizer = text.load_tokenizer(ckpt_tok)
    elif tok_path.exists():  # a resumed run keeps its tokenizer
        tokenizer = text.load_tokenizer(tok_path)
    elif cfg.model.checkpoint is not None:
        raise ValueError(f"the checkpoint {cfg.model.checkpoint} has no tokenizer.json and data.tokenizer is not set: "
                         "a pretrained model needs the tokenizer it was trained with; pass "
                         "data.tokenizer=PATH/tokenizer.json")
    else:
        tokenizer = text.train_tokenizer(files, d.bpe_vocab)
    if d.backend == "tfds":
        from ..data import tfds_builders

        if row_bos(cfg, tokenizer) is not None:
            raise ValueError("this checkpoint's tokenizer puts a BOS token first and the model expects one, but "
                             "data.backend=tfds builds rows without it: set data.backend=array (or data.bos=false "
                             "to train without it)")
        tok_path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(tok_path))
        srcs = tfds_builders.prepare("text", run_dir.tfds, files=files, tokenizer_path=tok_path, seq_len=d.seq_len)
        train, val = srcs["train"], srcs["validation"]
    else:
        bos = row_bos(cfg, tokenizer)
        train, val = text.text_sources(text.encode_files(files, tokenizer), d.seq_len, bos=bos)
    if d.repeat:  # induction data: the same transformation of train and validation rows
        from ..data import RepeatedPassages

        vocab = tokenizer.get_vocab_size() if d.repeat_tokens == "random" else None
        train_seed, val_seed = seeds.repeated_passages(d.seed)
        train, val = (RepeatedPassages(train, d.repeat, train_seed, vocab=vocab),
                      RepeatedPassages(val, d.repeat, val_seed, vocab=vocab))
    return train, val, tokenizer


def row_bos(cfg: RunConfig, tokenizer) -> int | None:
    """The token every text row starts with, or ``None``. ``data.bos=true``: the checkpoint's ``config.json``
    ``bos_token_id`` (a clear error where there is none); ``false``: none; unset (``null``, the default): that token
    where the checkpoint's own tokenizer puts it first in what it encodes — the model was pretrained with one at every
    sequence start (Gemma, Llama 3), and reads text without it far worse — else none (GPT-2, OLMo, Qwen2, a fresh
    model)."""
    import json

    want = cfg.data.bos
    if want is False or (want is None and (cfg.model.checkpoint is None or cfg.data.repeat)):
        return None  # (repeated passages may overwrite a row's first token: no BOS unless asked, which is refused)
    if cfg.model.checkpoint is None:
        raise ValueError("data.bos=true on text puts the pretrained model's BOS token first in every row, and a fresh "
                         "model has none: set model.checkpoint=DIR (its config.json names bos_token_id) or "
                         "data.bos=false")
    path = Path(cfg.model.checkpoint) / "config.json"
    bos = json.loads(path.read_text()).get("bos_token_id") if path.exists() else None
    named = isinstance(bos, int) and 0 <= bos < tokenizer.get_vocab_size()
    if want is None:
        return bos if named and tokenizer.encode("a").ids[:1] == [bos] else None
    if not named:
        raise ValueError(f"data.bos=true: {path} names no BOS token in the tokenizer (bos_token_id={bos!r}); "
                         "set data.bos=false")
    return bos
