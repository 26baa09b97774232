"""TFDS builders (``array_record`` files, read with ``as_data_source()``: no tensorflow needed).

``AdditionTask`` (the toy task) and ``TextCorpus`` (local text files -> tokenizer -> fixed-length rows). Needs the
``data`` extra (``tensorflow-datasets``, ``array_record``); the in-memory :class:`~sparsejax.data.ArraySource` is
the fallback behind the same interface.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("TFDS sources need the data extra: pip install 'sparsejax[data]'") from e
    return tfds


class TfdsSource:
    """A split of a prepared builder, with the :class:`~sparsejax.data.ArraySource` interface."""

    def __init__(self, data_source, seq_len: int):
        self.data, self.seq_len = data_source, seq_len

    def __len__(self):
        return len(self.data)

    def rows(self, indices) -> dict:
        records = self.data.__getitems__([int(i) for i in indices])
        return {"tokens": np.stack([r["tokens"] for r in records]).astype(np.int32),
                "mask": np.stack([r["mask"] for r in records]).astype(np.float32)}


@functools.cache  # TFDS registers builder classes by name: define them once
def _builder_classes():
    tfds = _tfds()
    from . import addition, text

    class AdditionTask(tfds.core.GeneratorBasedBuilder):
        """Two-digit addition, 9,000 train / 1,000 validation problems (see :mod:`sparsejax.data.addition`)."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "tokens": tfds.features.Tensor(shape=(11,), dtype=np.int32),
                "mask": tfds.features.Tensor(shape=(10,), dtype=np.float32)}))

        def _split_generators(self, dl_manager):
            return {name: self._generate_examples(name) for name in ("train", "validation")}

        def _generate_examples(self, name):
            src = addition.source(name)
            for i in range(len(src)):
                yield i, {"tokens": src.tokens[i], "mask": src.mask[i]}

    class TextCorpus(tfds.core.GeneratorBasedBuilder):
        """Local ``*.txt`` files tokenised with a given ``tokenizer.json`` into rows of ``seq_len + 1`` tokens."""

        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, *, files, tokenizer_path, seq_len: int, validation_fraction: float = 0.05, **kwargs):
            self.files, self.tokenizer_path = [str(f) for f in files], str(tokenizer_path)
            self.seq_len, self.validation_fraction = seq_len, validation_fraction
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "tokens": tfds.features.Tensor(shape=(self.seq_len + 1,), dtype=np.int32),
                "mask": tfds.features.Tensor(shape=(self.seq_len,), dtype=np.float32)}))

        def _split_generators(self, dl_manager):
            ids = text.encode_files(self.files, text.load_tokenizer(self.tokenizer_path))
            train, val = text.text_sources(ids, self.seq_len, self.validation_fraction)
            return {"train": self._generate_examples(train), "validation": self._generate_examples(val)}

        def _generate_examples(self, src):
            ones = np.ones(self.seq_len, np.float32)
            for i in range(len(src)):
                yield i, {"tokens": src.tokens[i], "mask": ones}

    return AdditionTask, TextCorpus


def prepare(kind: str, data_dir: str | Path, **kwargs) -> dict[str, TfdsSource]:
    """Build (once) and open a dataset: ``kind`` is ``"addition"`` or ``"text"`` (with files, tokenizer_path,
    seq_len). Returns ``{"train": source, "validation": source}``."""
    addition_cls, text_cls = _builder_classes()
    cls = {"addition": addition_cls, "text": text_cls}.get(kind)
    if cls is None:
        raise ValueError(f"unknown TFDS dataset kind {kind!r}; use 'addition' or 'text'")
    builder = cls(data_dir=str(data_dir), file_format="array_record", **kwargs)
    builder.download_and_prepare()
    seq_len = 10 if kind == "addition" else kwargs["seq_len"]
    return {split: TfdsSource(ds, seq_len) for split, ds in builder.as_data_source().items()}
