"""GGUF import: sparsejax's conversion against transformers' own GGUF loader (the reference), on tiny GGUF files
written here (llama, qwen2; quantised) and on the real SmolLM2-135M (`sparsejax data smollm2`; CI fetches it:
`SPARSEJAX_REQUIRE_REAL_MODELS=1` turns a missing model into a failure instead of a skip)."""
import functools
import json
import os

import jax
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.checkpoints.gguf import convert_gguf, unpermute_qk
from sparsejax.data import real_models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")


def _llama_cpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute, as written there (HF halves -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp():
    w = np.random.default_rng(0).normal(size=(4 * 8, 12))
    assert np.array_equal(unpermute_qk(_llama_cpp_permute(w, 4), 4), w)
    assert not np.array_equal(_llama_cpp_permute(w, 4), w)


# ------------------------------------------------------------------------------- tiny GGUF files written here
def _byte_vocab():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = sorted(set(bytes_to_unicode().values()))
    merges = ["Ġ t", "h e", "Ġt he"]
    return chars + ["Ġt", "he", "Ġthe", "<|endoftext|>"], merges


def _write_gguf(path, arch, seed=0):
    """A random HF model of ``arch`` written as GGUF the way llama.cpp's converter does (llama: q/k permuted;
    2-D weights Q8_0); returns the HF model."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    tokens, merges = _byte_vocab()
    kw = dict(vocab_size=len(tokens), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
              rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = (transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)) if arch == "llama" else
             transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw, use_sliding_window=False))).eval()
    for p in model.parameters():  # biases and norms are zero / one at init: give them values that matter
        torch.nn.init.normal_(p, std=0.3 if p.ndim == 1 else 0.08)
    w = GGUFWriter(str(path), arch)
    w.add_block_count(2), w.add_context_length(64), w.add_embedding_length(64), w.add_feed_forward_length(96)
    w.add_head_count(4), w.add_head_count_kv(2), w.add_layer_norm_rms_eps(1e-6), w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "default")
    w.add_token_list(tokens), w.add_token_merges(merges), w.add_token_types([1] * (len(tokens) - 1) + [3])
    w.add_eos_token_id(len(tokens) - 1)
    names = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm", "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
             "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    for hf, t in model.state_dict().items():
        parts = hf.replace("model.", "").split(".")
        layer = f"blk.{parts[1]}." if parts[0] == "layers" else ""
        module = next(p for p in parts if p in names)
        a = t.numpy().astype(np.float32)
        if arch == "llama" and module in ("q_proj", "k_proj"):
            a = _llama_cpp_permute(a, 4 if module == "q_proj" else 2)
        name = f"{layer}{names[module]}.{parts[-1]}"
        if a.ndim == 2:
            w.add_tensor(name, quantize(a, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_gguf_matches_transformers_loader(tmp_path, arch):
    path = tmp_path / f"{arch}.gguf"
    original = _write_gguf(path, arch)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = np.random.default_rng(1).integers(0, original.config.vocab_size, (2, 24))
    with torch.no_grad():
        want = ref(torch.tensor(tokens)).logits.numpy()
        unquantised = original(torch.tensor(tokens)).logits.numpy()
    model = sj.from_gguf(path)
    got = np.asarray(sj.forward(model.config, model.params, tokens, None, mode="eval")[0])
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)
    assert np.abs(want - unquantised).max() > 1e-4  # the quantisation is real: the reference is not the fp32 model
    out = convert_gguf(path, tmp_path / "hf")  # the directory both libraries read
    again = sj.from_pretrained(out)
    np.testing.assert_array_equal(np.asarray(sj.forward(again.config, again.params, tokens, None)[0]), got)
    with torch.no_grad():
        hf_dir = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        np.testing.assert_allclose(hf_dir(torch.tensor(tokens)).logits.numpy(), want, atol=2e-4, rtol=2e-4)


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    from gguf import GGUFWriter

    w = GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ValueError, match="'mamba' is not supported .*llama, qwen2"):
        sj.from_gguf(tmp_path / "m.gguf")
    with pytest.raises(FileNotFoundError, match="sparsejax data smollm2"):
        sj.from_gguf(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        sj.from_gguf(tmp_path / "junk.gguf")


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown real model 'smolm2'; choose one of smollm2"):
        real_models.model_dir("smolm2")
    with pytest.raises(FileNotFoundError, match="`sparsejax data smollm2`"):
        real_models.model_dir("smollm2", cache=tmp_path)


# ------------------------------------------------------------------------------- the real SmolLM2-135M
@functools.partial(jax.jit, static_argnums=0)
def _jit_logits(config, params, tokens):
    return sj.forward(config, params, tokens, None, mode="eval")[0]


def _greedy(model, seq, n, width=64):
    """``n`` greedy tokens after ``seq``; every step runs one right-padded row of ``width`` tokens (causal: the
    padding after the last real token cannot change its logits), so all steps share one compilation."""
    out = []
    for _ in range(n):
        row = seq + out
        logits = _jit_logits(model.config, model.params, np.array([row + [0] * (width - len(row))]))
        out.append(int(np.argmax(logits[0, len(row) - 1])))
    return out


def _real(name):
    try:
        return real_models.model_dir(name), real_models.gguf_path(name)
    except FileNotFoundError as e:
        if os.environ.get("SPARSEJAX_REQUIRE_REAL_MODELS") == "1":
            raise
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smollm2():
    directory, path = _real("smollm2")
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return directory, ref, ref_tok, sj.from_pretrained(directory)


TEXTS = ["When Mary and John went to the store, John gave a drink to",
         "The war lasted from the year 1732 to the year 17",
         "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
         "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles"]


def test_smollm2_weights_equal_transformers(smollm2):
    from safetensors.numpy import load_file

    directory, ref, _, _ = smollm2
    ours = load_file(str(directory / "model.safetensors"))
    want = ref.state_dict()
    assert set(ours) | {"lm_head.weight"} == set(want)  # tied embeddings: no lm_head tensor
    for name, tensor in ours.items():
        np.testing.assert_array_equal(tensor, want[name].numpy(), err_msg=name)
    hf = json.loads((directory / "config.json").read_text())
    assert (hf["num_hidden_layers"], hf["num_attention_heads"], hf["num_key_value_heads"], hf["rope_theta"]) == \
        (30, 9, 3, 100000.0)


def test_smollm2_tokenizer_round_trips_and_matches(smollm2):
    from tokenizers import Tokenizer

    directory, _, ref_tok, _ = smollm2
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    for text in TEXTS + ["<|im_start|>user\nHi 2024!<|im_end|>", "naïve café — 3.14159"]:
        ids = tok.encode(text).ids
        assert ids == ref_tok(text)["input_ids"], text
        assert tok.decode(ids, skip_special_tokens=False) == text
    digits = tok.encode(" 1732").ids
    assert [tok.decode([i]) for i in digits] == [" ", "1", "7", "3", "2"]  # SmolLM2 splits numbers into digits


def test_smollm2_logits_and_greedy_match_transformers(smollm2):
    from tokenizers import Tokenizer

    directory, ref, _, model = smollm2
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    ids = np.array([tok.encode(TEXTS[2]).ids[:48]])
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got = np.asarray(sj.forward(model.config, model.params, ids, None, mode="eval")[0])
    # fp32, 30 layers: observed max |diff| ~1e-4 on logits of magnitude ~35
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    for prompt, continuation in ((TEXTS[0], " Mary"), (TEXTS[1], "35")):
        seq = tok.encode(prompt).ids
        with torch.no_grad():
            ref_out = ref.generate(torch.tensor([seq]), max_new_tokens=6, do_sample=False)[0, len(seq):].tolist()
        ours = _greedy(model, seq, 6)
        assert ours == ref_out
        assert tok.decode(ours).startswith(continuation)


def test_qwen25_coder_logits_match_transformers():
    """Qwen2.5-Coder-0.5B (`sparsejax data qwen2.5-coder-0.5b`, 491 MB; not fetched in CI): skipped when absent."""
    from tokenizers import Tokenizer

    try:
        directory, path = real_models.model_dir("qwen2.5-coder-0.5b"), real_models.gguf_path("qwen2.5-coder-0.5b")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    code = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"
    for text in (code, TEXTS[0], "x = 12345 + 678"):
        assert tok.encode(text).ids == ref_tok(text)["input_ids"] and tok.decode(tok.encode(text).ids) == text
    ids = np.array([tok.encode(code).ids])
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    model = sj.from_pretrained(directory)
    got = np.asarray(sj.forward(model.config, model.params, ids, None, mode="eval")[0])
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)  # observed max |diff| 4.6e-5 (logits up to 28)


# ------------------------------------------------------------------------------- the real Gemma-3-270M
@pytest.fixture(scope="module")
def gemma3():
    directory, path = _real("gemma3-270m")
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return directory, ref, ref_tok, sj.from_pretrained(directory)


def _long_text():
    """Real text longer than Gemma's 512-token window: this repository's method page."""
    from pathlib import Path

    return (Path(__file__).parent.parent / "docs" / "method.md").read_text()


def test_gemma3_weights_config_and_tokenizer_equal_transformers(gemma3):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    directory, ref, ref_tok, model = gemma3
    ours, want = load_file(str(directory / "model.safetensors")), ref.state_dict()
    assert set(ours) | {"lm_head.weight"} == set(want)  # tied embeddings
    for name, tensor in ours.items():  # norms: llama.cpp's stored 1 + w, read back as w
        np.testing.assert_array_equal(tensor, want[name].numpy(), err_msg=name)
    c, r = model.config, ref.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.sliding_window) == (18, 640, 4, 1, 256, 512)
    assert list(c.layer_types) == list(r.layer_types) and c.layer_windows().count(None) == 3
    assert (c.query_pre_attn_scalar, c.rope_theta, c.rope_local_theta) == (r.query_pre_attn_scalar, 1e6, 1e4)
    assert (directory / "GEMMA_TERMS.html").stat().st_size > 100_000  # the terms of use travel with the weights
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    for text in TEXTS + [_long_text(), "  two  spaces\tand\ttabs\n\n<start_of_turn>user\nnaïve café 😀 1234567"]:
        ids = tok.encode(text).ids
        assert ids == ref_tok(text)["input_ids"], text[:60]
        assert ids[0] == 2 and tok.decode(ids, skip_special_tokens=False) == "<bos>" + text  # exact round trip


def test_gemma3_logits_past_the_window_and_greedy_match_transformers(gemma3):
    from tokenizers import Tokenizer

    directory, ref, _, model = gemma3
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    ids = np.array([tok.encode(_long_text()).ids[:640]])  # 128 positions past the 512-token window
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got = np.asarray(_jit_logits(model.config, model.params, ids))
    # fp32, 18 layers: observed max |diff| 9.4e-5 on logits up to 37 (2-core AMD EPYC, jax 0.10.2 / torch 2.13)
    np.testing.assert_allclose(got, want, atol=5e-4, rtol=0)
    unwindowed = np.asarray(_jit_logits(model.config.replace(sliding_window=10**6), model.params, ids))
    assert np.abs(unwindowed - want)[0, 512:].max() > 1.0  # the window matters past 512: it is applied
    np.testing.assert_array_equal(unwindowed[0, :512], got[0, :512])
    seq = tok.encode(TEXTS[0]).ids
    with torch.no_grad():
        ref_out = ref.generate(torch.tensor([seq]), max_new_tokens=4, do_sample=False)[0, len(seq):].tolist()
    ours = _greedy(model, seq, 4)
    assert ours == ref_out and tok.decode(ours).startswith(" Mary.")
