"""One place defines a family: a fresh model of every family is that family's architecture, survives the trip
through a Hugging Face config.json, and matches transformers' logits after save_pretrained."""
import os

import jax
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.config import load_config, model_config
from sparsejax.models import FAMILIES, ModelConfig, config_from_hf, config_to_hf

SHAPE = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_position=32)
# what a fresh model of each family must be (independently of FAMILY_SPEC: read off transformers' modelling code)
EXPECTED = {
    "gpt2": dict(norm="layernorm", position="learned", mlp="gelu", qkv_bias=True, out_bias=True, mlp_bias=True,
                 tie_embeddings=True, qk_norm=False, norm_position="pre"),
    "llama": dict(norm="rmsnorm", position="rope", mlp="swiglu", qkv_bias=False, out_bias=False, qk_norm=False,
                  norm_position="pre", tie_embeddings=False),
    "olmo": dict(norm="layernorm_noparam", position="rope", mlp="swiglu", qkv_bias=False, qk_norm=False,
                 norm_position="pre"),
    "olmo2": dict(norm="rmsnorm", position="rope", mlp="swiglu", qk_norm=True, norm_position="post",
                  qkv_bias=False),
    "qwen2": dict(norm="rmsnorm", position="rope", mlp="swiglu", qkv_bias=True, out_bias=False, qk_norm=False,
                  norm_position="pre"),
    # Gemma3DecoderLayer / Gemma3RMSNorm / Gemma3TextScaledWordEmbedding / Gemma3TextConfig's defaults
    "gemma3": dict(norm="rmsnorm_plus_one", norm_position="sandwich", position="rope", mlp="swiglu",
                   activation="gelu_tanh", qkv_bias=False, qk_norm=True, qk_norm_per_head=True, embed_scale=True,
                   tie_embeddings=True, sliding_window=512, rope_theta=1e6, rope_local_theta=1e4),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_model_is_the_family(family):
    for cfg in (ModelConfig(family, **SHAPE),
                model_config(load_config(None, [f"model.family={family}", "model.vocab_size=97"]).model)):
        for field, value in EXPECTED[family].items():
            assert getattr(cfg, field) == value, (family, field)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_round_trip(family):
    cfg = ModelConfig(family, **SHAPE)
    assert config_from_hf(config_to_hf(cfg)) == cfg


def test_contradicting_the_family_is_an_error():
    with pytest.raises(ValueError, match="olmo2 model has qk_norm=True"):
        ModelConfig("olmo2", **SHAPE, qk_norm=False)
    with pytest.raises(ValueError, match="qwen2 model has qkv_bias=True"):
        ModelConfig("qwen2", **SHAPE, qkv_bias=False)
    with pytest.raises(ValueError, match="one attention_bias"):
        ModelConfig("llama", **SHAPE, qkv_bias=True, out_bias=False)
    with pytest.raises(ValueError, match="model.family"):  # the run config names the key
        load_config(None, ["model.famly=gpt2"])


def test_gemma3_layer_pattern_and_windows():
    cfg = ModelConfig("gemma3", **{**SHAPE, "n_layers": 13})
    assert cfg.layer_windows() == tuple(None if (i + 1) % 6 == 0 else 512 for i in range(13))  # every sixth global
    assert cfg.query_pre_attn_scalar == cfg.head_dim == 8  # Gemma3TextConfig: 256 = the head_dim of its models
    assert ModelConfig("qwen2", **SHAPE).layer_windows() == (None, None)
    assert ModelConfig("qwen2", **SHAPE, sliding_window=8).layer_windows() == (8, 8)
    qwen = {**config_to_hf(ModelConfig("qwen2", **SHAPE)), "use_sliding_window": True, "max_window_layers": 1}
    del qwen["sliding_window"], qwen["layer_types"]  # transformers' defaults: window 4096, layers >= max_window_layers
    assert config_from_hf(qwen).layer_windows() == (None, 4096)
    assert config_from_hf({**qwen, "use_sliding_window": False}).layer_windows() == (None, None)
    with pytest.raises(ValueError, match="llama has no sliding-window attention"):
        ModelConfig("llama", **SHAPE, sliding_window=8)
    with pytest.raises(ValueError, match="sliding_window is not set"):
        ModelConfig("qwen2", **SHAPE, layer_types=("sliding_attention", "full_attention"))
    with pytest.raises(ValueError, match="for each of the 2 layers"):
        ModelConfig("gemma3", **SHAPE, layer_types=("full_attention",))
    with pytest.raises(ValueError, match="soft-capping"):
        config_from_hf({**config_to_hf(ModelConfig("gemma3", **SHAPE)), "final_logit_softcapping": 30.0})
    with pytest.raises(ValueError, match="gemma3_text"):
        config_from_hf({"model_type": "gemma3", "text_config": {}})


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_special_token_ids_follow_the_vocabulary(family):
    """config.json names the family's bos / eos / pad ids only where the vocabulary holds them (a fresh GPT-2 with
    97 tokens must not claim 50256)."""
    small, large = (config_to_hf(ModelConfig(family, **{**SHAPE, "vocab_size": v})) for v in (97, 50257))
    if family == "gpt2":
        assert (small["bos_token_id"], small["eos_token_id"]) == (None, None)
        assert (large["bos_token_id"], large["eos_token_id"]) == (50256, 50256)
    else:
        assert (small["bos_token_id"], small["eos_token_id"], small["pad_token_id"]) == (2, 1, 0)
    tiny = config_to_hf(ModelConfig(family, **{**SHAPE, "vocab_size": 2}))
    assert all(i is None or i < 2 for i in (tiny["bos_token_id"], tiny["eos_token_id"], tiny["pad_token_id"]))


WINDOWED = {"gemma3": dict(sliding_window=4, layer_types=("sliding_attention", "full_attention"), head_dim=16,
                           n_kv_heads=1, query_pre_attn_scalar=12.0),
            "qwen2": dict(sliding_window=4, layer_types=("full_attention", "sliding_attention"), n_kv_heads=2)}


@pytest.mark.parametrize("family, extra", [(f, {}) for f in FAMILIES] + [(f, WINDOWED[f]) for f in sorted(WINDOWED)],
                         ids=[*FAMILIES, *(f"{f}-window" for f in sorted(WINDOWED))])
def test_fresh_model_through_transformers_and_back(family, extra, tmp_path):
    torch = pytest.importorskip("torch", reason="needs the reference extra (make test installs it)")
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = ModelConfig(family, **SHAPE, **extra)
    assert config_from_hf(config_to_hf(cfg)) == cfg
    params = sj.init_params(cfg, jax.random.PRNGKey(3), std=0.2)
    # non-trivial norm weights (init is 1 / 0)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(len(str(p))), x.shape)
        if "norm" in str(p) else x, params)
    sj.save_pretrained(sj.Model(cfg, params), tmp_path / "m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert type(hf).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "olmo": "OlmoForCausalLM",
                                 "olmo2": "Olmo2ForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                 "gemma3": "Gemma3ForCausalLM"}[family]
    tokens = np.random.default_rng(1).integers(0, 97, size=(2, 19))
    with torch.no_grad():
        ref = hf(torch.as_tensor(tokens)).logits.float().numpy()
    ours, _ = sj.forward(cfg, params, tokens)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=1e-4)
    # padded batches (issue E): left and right padding with transformers' attention_mask (and position_ids), compared
    # on the real tokens; left padding with positions = cumsum(mask) - 1 equals the unpadded rows
    mask = np.ones_like(tokens)
    mask[0, :5] = 0   # row 0 left-padded
    mask[1, -4:] = 0  # row 1 right-padded
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        ref = hf(torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask),
                 position_ids=torch.as_tensor(positions)).logits.float().numpy()
    padded, _ = sj.forward(cfg, params, tokens, attention_mask=mask, positions=positions)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(padded)[real], ref[real], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(padded)[0, 5:], np.asarray(sj.forward(cfg, params, tokens[:1, 5:])[0])[0],
                               atol=1e-5, rtol=1e-5)
    back = sj.from_pretrained(tmp_path / "m")
    assert back.config == cfg
    flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    got, want = flat(back.params), flat(params)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
