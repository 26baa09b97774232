"""Every error that tells the user what to do: the mistake raises it, and doing what it says works (issue S).

Each case is ``(mistake, message, fix)``: ``mistake()`` must raise with ``message``; ``fix()`` is the same call
changed exactly as the message says, and must succeed. Cases that need a training run live beside their feature
(tests/test_train*.py: tokenizer, checkpoint vocabulary/context, resume, run directory, corpus encoding)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import data
from sparsejax.config import load_config
from sparsejax.data import addition

CFG = sj.ModelConfig(family="llama", vocab_size=16, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_position=8)
PARAMS = sj.init_params(CFG, jax.random.PRNGKey(0))
TOKENS = np.array([[1, 2, 3, 4]])
QKV = [jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 2, 4)), jnp.float32) for _ in range(3)]
MASK = np.array([[0, 1, 1, 1, 1]])
QWEN_FRESH = dict(family="qwen2", vocab_size=16, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_position=8)


def _tasks_with(tokenizer_words):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from sparsejax import tasks

    vocab = {w: i for i, w in enumerate(["[UNK]", *tokenizer_words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tasks, tok


CASES = {
    # "use shorter contexts"
    "context": (lambda: sj.forward(CFG, PARAMS, np.ones((1, 9), int)), "exceeds the model's max_position 8; use "
                "shorter", lambda: sj.forward(CFG, PARAMS, np.ones((1, 8), int))),
    # "pass mode='eval' for deterministic gates"
    "train_seed": (lambda: sj.forward(CFG, PARAMS, TOKENS, 1.0, mode="train"), "pass mode='eval'",
                   lambda: sj.forward(CFG, PARAMS, TOKENS, 1.0, mode="eval")),
    # "use (), (L,) layers, (H,) heads or (L, H)"
    "gate_shape": (lambda: sj.forward(CFG, PARAMS, TOKENS, jnp.zeros((3,))), r"use \(\), \(2,\) layers",
                   lambda: sj.forward(CFG, PARAMS, TOKENS, jnp.zeros((2, 2)))),
    # "pass implementation='auto' or 'reference'"
    "mask_impl": (lambda: sj.sparse_attention(*QKV, 1.0, mode="eval", attention_mask=MASK, implementation="chunked"),
                  "pass implementation='auto' or 'reference'",
                  lambda: sj.sparse_attention(*QKV, 1.0, mode="eval", attention_mask=MASK, implementation="auto")),
    # "use an array, 'zero', 'mean' or a function"
    "intervention": (lambda: sj.forward(CFG, PARAMS, TOKENS, interventions={"blocks.0.hook_mlp_out": "zeros"}),
                     "use an array, 'zero', 'mean'",
                     lambda: sj.forward(CFG, PARAMS, TOKENS, interventions={"blocks.0.hook_mlp_out": "zero"})),
    # "{where} is a section; give its keys (e.g. train.steps=...)"
    "section": (lambda: load_config("toy_addition_posttrain", ["train=5"]), r"give its keys \(e.g. train.steps=",
                lambda: load_config("toy_addition_posttrain", ["train.steps=5"])),
    # "did you mean train.steps?"
    "typo": (lambda: load_config("toy_addition_posttrain", ["train.step=5"]), "did you mean train.steps",
             lambda: load_config("toy_addition_posttrain", ["train.steps=5"])),
    # "presets: gpt2_small, ..." (one of the listed names)
    "preset": (lambda: load_config("toy_addition"), "presets: .*toy_addition_posttrain",
               lambda: load_config("toy_addition_posttrain")),
    # "set gate.learnable=true ... or drop gate.bias_lr"
    "bias_lr": (lambda: load_config("gpt2_small", ["gate.learnable=false"]), "set gate.learnable=true",
                lambda: load_config("gpt2_small", ["gate.learnable=true"])),
    # "CE-target mode needs constraint.anneal_from"
    "anneal": (lambda: load_config("toy_addition_posttrain", ["constraint.anneal_steps=100"]),
               "needs constraint.anneal_from",
               lambda: load_config("toy_addition_posttrain", ["constraint.anneal_steps=100",
                                                               "constraint.anneal_from=0.3"])),
    # "set constraint.method=pi or constraint.anneal_steps=0"
    "anneal_method": (lambda: load_config("toy_addition_posttrain", ["constraint.method=dual_ascent",
                                                                      "constraint.anneal_steps=100"]),
                      "set constraint.method=pi or constraint.anneal_steps=0",
                      lambda: load_config("toy_addition_posttrain", ["constraint.method=pi",
                                                                      "constraint.anneal_steps=100",
                                                                      "constraint.anneal_from=0.3"])),
    # "constraint.sense=density needs constraint.density_target (e.g. 0.01)"
    "density_target": (lambda: load_config("toy_addition_posttrain", ["constraint.sense=density"]),
                       r"needs constraint.density_target \(e.g. 0.01\)",
                       lambda: load_config("toy_addition_posttrain", ["constraint.sense=density",
                                                                       "constraint.density_target=0.01"])),
    # "use a smaller batch or more data"
    "batch": (lambda: data.batch_indices(10, 0, 16, 0), "use a smaller batch",
              lambda: data.batch_indices(10, 0, 8, 0)),
    # "use 'train' or 'validation'"
    "split": (lambda: addition.split("test"), "use 'train' or 'validation'",
              lambda: addition.split("validation")),
    # "give sliding_window= (the window)": local layers need their window (Qwen2 reads sliding windows now)
    "window_layers": (lambda: sj.ModelConfig(**{**QWEN_FRESH, "layer_types": ("sliding_attention",)}),
                      r"give sliding_window= \(the window\)",
                      lambda: sj.ModelConfig(**{**QWEN_FRESH, "layer_types": ("sliding_attention",),
                                                "sliding_window": 4})),
    # "pass causal=True": a sliding window is causal
    "window_causal": (lambda: sj.sparse_attention(*QKV, 1.0, mode="eval", window=2, causal=False),
                      "pass causal=True", lambda: sj.sparse_attention(*QKV, 1.0, mode="eval", window=2, causal=True)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_suggested_fix_works(name):
    mistake, message, fix = CASES[name]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        mistake()
    fix()


def test_task_vocabulary_fix(tmp_path):
    """"use a tokenizer with a larger vocabulary (e.g. GPT-2's)": a word-level tokenizer with one name fails, one
    with the task's names works (GPT-2's own is tested in test_tasks.py)."""
    from sparsejax import tasks as t

    words = ["When", "and", "went", "to", "the", ",", "gave", "a", "Then", "While", "After", "had", "fun", "at",
             "decided", "give", "were", "working", "thinking", "about", "going", "lot", "of", "wanted", "ride",
             "walk", "got", "long"]
    tasks, small = _tasks_with(words + ["Mary"] + t.PLACES + t.OBJECTS)
    with pytest.raises(ValueError, match="use a tokenizer with a larger vocabulary"):
        tasks.ioi(small, 4)
    tasks, larger = _tasks_with(sorted(set(words + t.NAMES + t.PLACES + t.OBJECTS)))
    assert tasks.ioi(larger, 4).clean.shape[0] > 0


def test_checkpoint_data_fixes(tmp_path):
    """With a pretrained checkpoint, the vocabulary / context errors name fixes that act on the data (the model's
    sizes come from the checkpoint, so model.vocab_size / model.max_position would do nothing): each works; and a
    checkpoint without tokenizer.json gets the data.tokenizer fix, which works."""
    from sparsejax.data import text
    from sparsejax.train import Trainer

    corpus = tmp_path / "c.txt"
    rng = np.random.default_rng(0)  # many distinct words, so that both BPE vocabularies fill up
    corpus.write_text(" ".join("".join(rng.choice(list("abcdefghijklmnop"), rng.integers(2, 8))) for _ in range(6000)))
    small = text.train_tokenizer([corpus], 300, tmp_path / "small.json")
    text.train_tokenizer([corpus], 400, tmp_path / "large.json")
    assert small.get_vocab_size() < text.load_tokenizer(tmp_path / "large.json").get_vocab_size()
    cfg = sj.ModelConfig(family="llama", vocab_size=small.get_vocab_size(), d_model=16, n_layers=1, n_heads=2,
                         d_ff=32, max_position=16)
    ckpt = tmp_path / "ckpt"
    sj.save_pretrained(sj.Model(cfg, sj.init_params(cfg, jax.random.PRNGKey(0))), ckpt)   # no tokenizer.json
    base = [f"model.checkpoint={ckpt}", "data.kind=text", f"data.path={corpus}", "data.batch_size=4",
            "data.eval_batches=1", "train.steps=1", "gate.enabled=false", "constraint.method=none"]
    make = lambda extra: Trainer(load_config(None, base + extra), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="pass data.tokenizer=PATH/tokenizer.json"):
        make(["data.seq_len=16"])
    with pytest.raises(ValueError, match=r"use the checkpoint's own tokenizer \(data.tokenizer=...\)"):
        make(["data.seq_len=16", f"data.tokenizer={tmp_path / 'large.json'}"])
    with pytest.raises(ValueError, match="longer than the model's max_position=16; lower data.seq_len$"):
        make(["data.seq_len=32", f"data.tokenizer={tmp_path / 'small.json'}"])
    make(["data.seq_len=16", f"data.tokenizer={tmp_path / 'small.json'}"])   # the fixes applied: it builds


def test_overrides_after_mesh_are_overrides():
    from sparsejax.cli import _overrides_out_of_mesh, build_parser

    args, _ = build_parser().parse_known_args(["plan", "olmo_7b", "--mesh", "fsdp=16", "train.lora_rank=16",
                                               "data=2"])
    _overrides_out_of_mesh(args)
    assert args.mesh == ["fsdp=16", "data=2"] and args.overrides == ["train.lora_rank=16"]


def test_text_bos_comes_from_the_checkpoint_or_is_a_clear_error(tmp_path):
    """data.bos=true on text: every row starts with the checkpoint's bos_token_id; a fresh model (no checkpoint) or a
    config.json without a BOS token in the tokenizer is refused with the fix."""
    import json

    from sparsejax.data import text
    from sparsejax.train.data import build_data

    corpus = tmp_path / "c.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 300)
    tok = text.train_tokenizer([corpus], 300, tmp_path / "tokenizer.json")
    cfg = sj.ModelConfig(family="llama", vocab_size=tok.get_vocab_size(), d_model=16, n_layers=1, n_heads=2,
                         d_ff=32, max_position=32)
    ckpt = tmp_path / "ckpt"
    sj.save_pretrained(sj.Model(cfg, sj.init_params(cfg, jax.random.PRNGKey(0))), ckpt)
    base = ["data.kind=text", f"data.path={corpus}", f"data.tokenizer={tmp_path / 'tokenizer.json'}", "data.seq_len=16",
            "data.bos=true"]
    hf = json.loads((ckpt / "config.json").read_text())
    for bos, fine in ((7, True), (None, False), (tok.get_vocab_size(), False)):
        (ckpt / "config.json").write_text(json.dumps({**hf, "bos_token_id": bos}))
        run_cfg = load_config(None, base + [f"model.checkpoint={ckpt}"])
        if fine:
            train, val, _ = build_data(run_cfg, tmp_path / "run")
            rows = train.rows(np.arange(len(train)))["tokens"]
            assert rows.shape[1] == 17 and (rows[:, 0] == 7).all() and val.rows([0])["tokens"][0, 0] == 7
            plain = build_data(load_config(None, base[:-1] + [f"model.checkpoint={ckpt}"]), tmp_path / "run")[0]
            np.testing.assert_array_equal(rows[0, 1:], plain.rows([0])["tokens"][0, :16])
        else:
            with pytest.raises(ValueError, match="names no BOS token in the tokenizer.*set data.bos=false"):
                build_data(run_cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="a fresh model has none: set model.checkpoint=DIR"):
        build_data(load_config(None, base), tmp_path / "run")
    # unset (the default): the BOS token only where the checkpoint's tokenizer puts it first
    (ckpt / "config.json").write_text(json.dumps({**hf, "bos_token_id": 7}))
    auto = base[:-1] + [f"model.checkpoint={ckpt}"]
    rows_of = lambda over: build_data(load_config(None, over), tmp_path / "run")[0].rows(np.arange(5))["tokens"]
    np.testing.assert_array_equal(rows_of(auto), rows_of(auto + ["data.bos=false"]))  # this tokenizer adds none
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single=f"{tok.id_to_token(7)} $A",
                                                       special_tokens=[(tok.id_to_token(7), 7)])
    tok.save(str(tmp_path / "bos_tokenizer.json"))
    assert (rows_of(auto + [f"data.tokenizer={tmp_path / 'bos_tokenizer.json'}"])[:, 0] == 7).all()
