"""Data sources: the addition task, deterministic resumable batches, text rows, TFDS array_record builders."""
import numpy as np
import pytest

from sparsejax.data import ArraySource, batch_at, batch_indices
from sparsejax.data import addition, text


def test_addition_rows_and_mask():
    assert addition.decode(addition.encode(53, 21)) == "53+21=00074"
    train, val = addition.split("train"), addition.split("validation")
    assert train.shape == (9000, 11) and val.shape == (1000, 11)
    assert not set(map(bytes, train)) & set(map(bytes, val))
    for row in train[:50]:
        a, b = row[0] * 10 + row[1], row[3] * 10 + row[4]
        assert int("".join(map(str, row[6:]))) == a + b
    mask = addition.source("train").rows([0])["mask"][0]
    np.testing.assert_array_equal(np.nonzero(mask)[0], [5, 6, 7, 8, 9])  # targets = the 5 answer digits
    assert [addition.carries(*p) for p in ((12, 34), (15, 37), (95, 17))] == [0, 1, 2]


def test_addition_with_a_bos_token_is_the_same_problems_one_position_later():
    plain, bos = addition.split("validation"), addition.split("validation", bos=True)
    assert bos.shape == (1000, 12) and (bos[:, 0] == addition.BOS).all()
    np.testing.assert_array_equal(bos[:, 1:], plain)
    assert addition.decode(addition.encode(53, 21, bos=True)) == "^53+21=00074"
    assert addition.vocab(True) == addition.vocab() + 1 == 13
    for src in (addition.source("train"), addition.source("train", bos=True)):
        row = src.rows([0])
        targets = row["tokens"][0, 1:][row["mask"][0] > 0]
        np.testing.assert_array_equal(targets, row["tokens"][0, -5:])  # the loss is on the 5 answer digits only


def _oracle(wrong_digit=None):
    """A causal "model" that adds: at the answer positions it reads a, b from the prompt it is given and predicts
    the next digit of a + b (``wrong_digit``: predicts digit ``k`` one too high whenever a's units digit is 3)."""
    def logits_fn(tokens):
        tokens = np.asarray(tokens)
        off = int(tokens[0, 0] == addition.BOS)
        a = tokens[:, off] * 10 + tokens[:, off + 1]
        b = tokens[:, off + 3] * 10 + tokens[:, off + 4]
        digits = np.array([[int(c) for c in f"{x:05d}"] for x in a + b])
        if wrong_digit is not None:
            hit = tokens[:, off + 1] == 3
            digits[hit, wrong_digit] = (digits[hit, wrong_digit] + 1) % 10
        out = np.zeros((*tokens.shape, addition.vocab(True)), np.float32)
        for k in range(5):
            out[np.arange(len(tokens)), off + 5 + k, digits[:, k]] = 1.0
        return out
    return logits_fn


@pytest.mark.parametrize("bos", [False, True])
def test_greedy_exact_match_decodes_from_the_prompt_alone(bos):
    rows = addition.split("validation", bos=bos)
    assert addition.greedy_exact_match(_oracle(), rows) == 1.0
    units_3 = np.mean(rows[:, int(bos) + 1] == 3)  # the problems the faulty oracle gets wrong
    assert addition.greedy_exact_match(_oracle(wrong_digit=2), rows) == pytest.approx(1 - units_3)
    with pytest.raises(ValueError, match="not addition problems"):
        addition.greedy_exact_match(_oracle(), rows[:, :9])


def test_batches_are_deterministic_and_cover_epochs():
    src = ArraySource(np.arange(30 * 3).reshape(30, 3))
    first = [batch_indices(30, s, 7, seed=3) for s in range(4)]  # one epoch = 4 batches of 7 (2 rows dropped)
    assert len(set(np.concatenate(first))) == 28
    np.testing.assert_array_equal(batch_at(src, 9, 7, seed=3)["tokens"], batch_at(src, 9, 7, seed=3)["tokens"])
    assert not np.array_equal(batch_indices(30, 4, 7, seed=3), batch_indices(30, 0, 7, seed=3))
    with pytest.raises(ValueError, match="larger than the data"):
        batch_indices(5, 0, 7, seed=0)


def test_memmap_source_behind_the_same_interface(tmp_path):
    rows = np.arange(40 * 5, dtype=np.int32).reshape(40, 5)
    mm = np.memmap(tmp_path / "rows.bin", dtype=np.int32, mode="w+", shape=rows.shape)
    mm[:] = rows
    mm.flush()
    src = ArraySource(np.memmap(tmp_path / "rows.bin", dtype=np.int32, mode="r", shape=(40, 5)))
    got = batch_at(src, 3, 8, seed=1)
    np.testing.assert_array_equal(got["tokens"], rows[batch_indices(40, 3, 8, seed=1)])
    assert got["mask"].shape == (8, 4) and got["mask"].all()
    with pytest.raises(ValueError, match=r"\[rows, seq \+ 1\]"):
        ArraySource(np.zeros(5))


def test_text_rows_and_tokenizer(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 200)
    tok = text.train_tokenizer([corpus], 300, tmp_path / "tokenizer.json")
    ids = text.encode_files([corpus], text.load_tokenizer(tmp_path))
    assert tok.decode(ids[:12].tolist()).startswith("To be, or not")
    train, val = text.text_sources(ids, 16)
    row = train.rows([1])["tokens"][0]
    np.testing.assert_array_equal(row, ids[16:33])  # stride seq_len, length seq_len + 1
    with pytest.raises(ValueError, match="shorter than one row"):
        text.to_rows(ids[:10], 16)
    # a BOS token first: the same stride, the BOS then seq_len corpus tokens; every corpus token a target once
    rows = text.to_rows(ids, 16, bos=299)
    assert rows.shape == (len(ids) // 16, 17) and (rows[:, 0] == 299).all()
    np.testing.assert_array_equal(rows[:, 1:].ravel(), ids[:rows.shape[0] * 16])
    assert text.text_sources(ids, 16, bos=299)[0].seq_len == 16
    with pytest.raises(FileNotFoundError, match="no text files"):
        text.corpus_files(tmp_path / "missing")


def test_tfds_array_record_builders(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="the data extra is not installed")
    from sparsejax.data import tfds_builders

    srcs = tfds_builders.prepare("addition", tmp_path / "tfds")
    assert len(srcs["train"]) == 9000 and len(srcs["validation"]) == 1000
    want = {bytes(r) for r in addition.split("train")}
    got = batch_at(srcs["train"], 0, 64, seed=0)
    assert got["tokens"].shape == (64, 11) and all(bytes(r) in want for r in got["tokens"])
    np.testing.assert_array_equal(got["mask"], addition.answer_mask(64))
    corpus = tmp_path / "c.txt"
    corpus.write_text("All the world's a stage, and all the men and women merely players.\n" * 100)
    text.train_tokenizer([corpus], 280, tmp_path / "tokenizer.json")
    srcs = tfds_builders.prepare("text", tmp_path / "tfds", files=[corpus], tokenizer_path=tmp_path / "tokenizer.json",
                                 seq_len=8)
    ids = text.encode_files([corpus], text.load_tokenizer(tmp_path))
    ref_train, _ = text.text_sources(ids, 8)
    assert len(srcs["train"]) == len(ref_train)
    rows = {bytes(r) for r in ref_train.tokens}
    assert all(bytes(r) in rows for r in srcs["train"].rows(range(5))["tokens"])


def test_non_utf8_corpus_is_one_clear_error_and_the_fix_works(tmp_path):
    from sparsejax.data import text

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait. ".encode("latin-1") * 50)
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text .*iconv -f latin1 -t utf-8"):
        text.corpus_files(bad)
    fixed = tmp_path / "latin1.utf8.txt"  # what the suggested iconv command writes
    fixed.write_text(bad.read_bytes().decode("latin-1"), encoding="utf-8")
    assert text.corpus_files(fixed) == [fixed]


def test_repeated_passages_copy_a_span_of_the_same_row():
    from sparsejax.data import RepeatedPassages

    base = ArraySource(np.arange(40 * 33, dtype=np.int32).reshape(40, 33))  # every token distinct
    src = RepeatedPassages(base, 0.5, seed=3)
    got = src.rows(np.arange(40))["tokens"]
    np.testing.assert_array_equal(src.rows([7, 2])["tokens"], got[[7, 2]])  # a row's copy depends on the row alone
    changed = 0
    for i in range(40):
        orig, row = base.tokens[i], got[i]
        diff = np.flatnonzero(row != orig)
        if diff.size == 0:
            continue
        changed += 1
        b, length = diff[0], diff.size
        assert 8 <= length <= 16 and np.all(np.diff(diff) == 1)  # one contiguous overwritten passage ...
        a = row[b] - orig[0]
        assert a + length <= b  # ... copied from earlier in the row, without overlap
        np.testing.assert_array_equal(row[b:b + length], orig[a:a + length])
    assert 10 <= changed <= 30  # about half the rows
    assert np.array_equal(RepeatedPassages(base, 0.5, seed=4).rows(np.arange(40))["tokens"], got) is False
    # random passages: the passage is overwritten by tokens below vocab, and the copy repeats them
    rnd_rows = RepeatedPassages(base, 0.5, seed=3, vocab=7).rows(np.arange(40))
    rnd = rnd_rows["tokens"]
    assert RepeatedPassages(base, 0.5, seed=3).rows(np.arange(40))["mask"].all()  # text passages: mask untouched
    for i in np.flatnonzero((got != base.tokens).any(1)):
        diff = np.flatnonzero(got[i] != base.tokens[i])
        b, length = diff[0], diff.size
        a = got[i, b] - base.tokens[i, 0]
        assert np.all(rnd[i, a:a + length] < 7) and np.array_equal(rnd[i, b:b + length], rnd[i, a:a + length])
        keep = np.ones(33, bool)
        keep[a:a + length] = keep[b:b + length] = False
        np.testing.assert_array_equal(rnd[i, keep], base.tokens[i, keep])  # the rest of the row is untouched
        want = np.ones(32, np.float32)
        want[max(a - 1, 0):a + length - 1] = 0  # no loss on predicting the random passage's first occurrence
        np.testing.assert_array_equal(rnd_rows["mask"][i], want)
    assert np.array_equal((rnd != base.tokens).any(1), (got != base.tokens).any(1))
    with pytest.raises(ValueError, match="share"):
        RepeatedPassages(base, 1.5)
    with pytest.raises(ValueError, match="vocabulary of >= 2"):
        RepeatedPassages(base, 0.5, vocab=1)
    with pytest.raises(ValueError, match="cannot hold two passages"):
        RepeatedPassages(ArraySource(np.zeros((4, 10), np.int32)), 0.5)
