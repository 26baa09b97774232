"""Model families against transformers on CPU (golden logits), checkpoint round trips, captures, bad input."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj

torch = pytest.importorskip("torch", reason="the reference extra (torch==2.13.0, transformers==5.23.0) is not "
                            "installed; `make test` installs it")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = dict(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, initializer_range=0.15)


def hf_model(kind, **kw):
    if kind == "gpt2":
        cfg = transformers.GPT2Config(**{**dict(vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                initializer_range=0.15), **kw})
        cls = transformers.GPT2LMHeadModel
    else:
        cfg_cls, cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
                        "olmo": (transformers.OlmoConfig, transformers.OlmoForCausalLM),
                        "olmo2": (transformers.Olmo2Config, transformers.Olmo2ForCausalLM),
                        "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM)}[kind]
        cfg = cfg_cls(**{**TINY, **kw})
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights and biases (HF initialises them to 1 and 0)
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


TOKENS = np.random.default_rng(0).integers(0, 101, size=(2, 23))
CASES = {
    "gpt2": ("gpt2", {}),
    "gpt2-untied": ("gpt2", dict(tie_word_embeddings=False)),
    "llama-mha-untied": ("llama", dict(num_key_value_heads=4)),
    "llama-gqa2-tied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama-gqa4-llama3rope": ("llama", dict(num_key_value_heads=1, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16))),
    "qwen2-gqa2": ("qwen2", dict(num_key_value_heads=2)),
    "olmo": ("olmo", dict(num_key_value_heads=4)),
    "olmo-clip": ("olmo", dict(num_key_value_heads=2, clip_qkv=0.5)),
    "olmo2-gqa2": ("olmo2", dict(num_key_value_heads=2)),
    # sliding-window attention (T = 23 > window 5): Qwen2's max_window_layers, Gemma 3's local/global pattern with
    # its own RoPE bases, one KV head, head_dim independent of d_model / heads, query_pre_attn_scalar != head_dim
    "qwen2-sliding": ("qwen2", dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=5,
                                    max_window_layers=1)),
    "gemma3-window": ("gemma3", dict(num_key_value_heads=1, head_dim=16, sliding_window=5, query_pre_attn_scalar=12,
                                     layer_types=["sliding_attention", "full_attention"], rope_parameters={
                                         "full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
    kind, kw = CASES[request.param]
    model = hf_model(kind, **kw)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, path


def test_golden_logits_match_transformers(saved):
    name, hf, path = saved
    model = sj.from_pretrained(path)
    assert model.gate is None
    logits, aux = jax.jit(lambda p, t: sj.forward(model.config, p, t))(model.params, TOKENS)
    want = hf_logits(hf, TOKENS)
    assert np.abs(want).max() > 0.5  # a non-trivial model
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(aux["density"], 1.0)


def test_round_trip_through_transformers(saved, tmp_path):
    name, hf, path = saved
    model = sj.from_pretrained(path)
    model.gate = sj.make_gate(2.5, shape=(model.config.n_layers, model.config.n_heads))
    sj.save_pretrained(model, tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ours = sj.forward(model.config, model.params, TOKENS)[0]
    np.testing.assert_allclose(hf_logits(reloaded, TOKENS), ours, atol=1e-4, rtol=0)
    again = sj.from_pretrained(tmp_path / "out")
    jax.tree.map(np.testing.assert_array_equal, again.params, model.params)
    np.testing.assert_array_equal(again.gate.bias, model.gate.bias)
    assert [p.name for p in (tmp_path).iterdir()] == ["out"]  # no temporary directory left behind


def test_huge_bias_equals_dense_exactly(saved):
    _, _, path = saved
    model = sj.from_pretrained(path)
    dense = sj.forward(model.config, model.params, TOKENS)[0]
    for mode in ("eval", "train"):
        sparse, aux = sj.forward(model.config, model.params, TOKENS, gate=1e4, mode=mode, seed=1)
        np.testing.assert_array_equal(sparse, dense)
        np.testing.assert_array_equal(aux["density"], 1.0)


def test_nanogpt_import_matches_transformers(tmp_path):
    hf = hf_model("gpt2", activation_function="gelu", vocab_size=128)  # nanoGPT: exact GELU, padded vocab
    state = {}
    for k, v in hf.state_dict().items():
        if k == "lm_head.weight":
            continue
        is_conv = k.endswith(".weight") and (".attn.c_" in k or ".mlp.c_" in k)
        state["_orig_mod." + k] = v.t().contiguous() if is_conv else v  # HF Conv1D [in, out] -> nn.Linear [out, in]
    state["_orig_mod.transformer.h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()  # causal buffer, ignored
    args = dict(n_layer=2, n_head=4, n_embd=32, block_size=64, bias=True, vocab_size=128)
    torch.save({"model": state, "model_args": args, "iter_num": 0}, tmp_path / "ckpt.pt")
    model = sj.from_nanogpt(tmp_path / "ckpt.pt")
    tokens = TOKENS % 128
    np.testing.assert_allclose(sj.forward(model.config, model.params, tokens)[0], hf_logits(hf, tokens), atol=1e-4)


def test_captures_are_consistent(saved):
    name, _, path = saved
    model = sj.from_pretrained(path)
    c = model.config
    logits, aux = sj.forward(c, model.params, TOKENS, gate=0.0, capture=["hook_pattern", "blocks.1.attn.hook_z",
                                                                        "attn.hook_adjacency", "hook_result",
                                                                        "hook_attn_out", "hook_embed"])
    caps = aux["captures"]
    assert "blocks.0.attn.hook_z" not in caps and "blocks.0.hook_mlp_out" not in caps  # only what was asked
    assert {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z", "hook_embed"} <= set(caps)
    b, t = TOKENS.shape
    assert caps["blocks.0.attn.hook_pattern"].shape == (b, c.n_heads, t, t)
    assert caps["blocks.1.attn.hook_z"].shape == (b, t, c.n_heads, c.head_dim)
    # the adjacency capture agrees with the pattern and with the attention's own adjacency
    adj = caps["blocks.0.attn.hook_adjacency"]
    np.testing.assert_array_equal(adj, caps["blocks.0.attn.hook_pattern"] > 0)
    assert 0.05 < adj[:, :, np.tril_indices(t)[0], np.tril_indices(t)[1]].mean() < 0.95
    # per-head results add up to the attention output (plus the output bias, when there is one)
    res = caps["blocks.1.attn.hook_result"].sum(2)
    if "bias" in model.params["layers"]["attn"]["o"]:
        res = res + model.params["layers"]["attn"]["o"]["bias"][1]
    if c.norm_position == "pre":
        np.testing.assert_allclose(res, caps["blocks.1.hook_attn_out"], atol=1e-5)
    with pytest.raises(ValueError, match="match no hook"):
        sj.forward(c, model.params, TOKENS, capture=["hook_nonsense"])


def test_pattern_capture_is_softmax_when_dense(saved):
    _, _, path = saved
    model = sj.from_pretrained(path)
    caps = sj.forward(model.config, model.params, TOKENS, capture="blocks.0.attn.hook_pattern")[1]["captures"]
    np.testing.assert_allclose(caps["blocks.0.attn.hook_pattern"].sum(-1), 1.0, atol=1e-5)


def test_bf16_compute_and_remat_stay_close():
    cfg = sj.ModelConfig(family="llama", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         head_dim=8, d_ff=48, max_position=32)
    params = sj.init_params(cfg, jax.random.PRNGKey(0), std=0.2)
    tokens = TOKENS[:, :16] % 64
    ref = sj.forward(cfg, params, tokens, gate=1.0)[0]
    for change in (dict(dtype="bfloat16"), dict(remat="full"), dict(remat="dots")):
        got = sj.forward(cfg.replace(**change), params, tokens, gate=1.0)[0]
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, ref, atol=0.1 if "dtype" in change else 1e-5)
    grads = [jax.grad(lambda p: sj.forward(cfg.replace(remat=r), p, tokens, gate=1.0, mode="train", seed=0)[0]
                      .mean())(params) for r in ("none", "full")]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), *grads)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_checkpoints(tmp_path, saved):
    name, hf, path = saved
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sj.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        sj.from_pretrained(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((path / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read"):
        sj.from_pretrained(broken)
    if name != "gpt2":
        return
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(path / "model.safetensors"))
    tensors["transformer.h.0.mlp.c_fc.weight"] = tensors["transformer.h.0.mlp.c_fc.weight"][:, :5]
    tensors["extra.weight"] = np.zeros(3, np.float32)
    del tensors["transformer.ln_f.bias"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        sj.from_pretrained(broken)
    for word in ("missing tensors", "transformer.ln_f.bias", "mis-shaped", "c_fc", "unknown tensors", "extra.weight"):
        assert word in str(err.value)


def test_bad_forward_inputs():
    cfg = sj.ModelConfig(family="gpt2", vocab_size=16, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=8,
                         d_ff=32, max_position=8, norm="layernorm", mlp="gelu", activation="gelu_tanh",
                         position="learned")
    params = sj.init_params(cfg, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="exceeds the model's max_position 8"):
        sj.forward(cfg, params, np.zeros((1, 9), np.int32))
    with pytest.raises(ValueError, match="needs seed"):
        sj.forward(cfg, params, np.zeros((1, 4), np.int32), gate=1.0, mode="train")
    with pytest.raises(ValueError, match="integer array"):
        sj.forward(cfg, params, np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="does not fit the model"):
        sj.forward(cfg, params, np.zeros((1, 4), np.int32), gate=sj.Gate(jnp.zeros(3)))
    with pytest.raises(ValueError, match="unknown model family"):
        cfg.replace(family="bert")
