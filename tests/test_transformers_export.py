"""The sparse attention inside PyTorch transformers (attn_implementation="sparsejax"): logits equal sparsejax's
eval-mode logits for gated models of several families (GQA included), incremental decoding with the KV cache
agrees with the full forward, and padding masks are honoured."""
import jax
import numpy as np
import pytest

import sparsejax as sj

torch = pytest.importorskip("torch", reason="needs the reference extra (make test installs it)")
pytest.importorskip("transformers")
from sparsejax.checkpoints.transformers_attention import load_sparse_model  # noqa: E402

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_position=32)


def _params(config, seed):
    """Random weights with queries and keys scaled up: attention scores of order 1, so gates open and close."""
    params = sj.init_params(config, jax.random.PRNGKey(seed))
    for name in ("q", "k"):
        params["layers"]["attn"][name]["kernel"] = params["layers"]["attn"][name]["kernel"] * 8.0
    return params


@pytest.mark.parametrize("family, extra, gate", [
    ("llama", dict(n_kv_heads=2), sj.make_gate(np.array([[-0.5, 0.2, 1.0, 3.0], [0.0, -1.0, 0.5, 2.0]]),
                                               shape=(2, 4))),
    ("gpt2", {}, sj.make_gate(0.3)),
    ("qwen2", dict(n_kv_heads=2), sj.make_gate(np.array([0.5, -0.2]), shape=(2,))),
    ("llama", {}, sj.make_gate(-2.3, kind="hard_concrete")),
    ("llama", {}, None),
    # sliding windows (T = 20 > 6): Gemma 3 (one KV head, query_pre_attn_scalar != head_dim), Qwen2
    ("gemma3", dict(n_kv_heads=1, head_dim=16, sliding_window=6, query_pre_attn_scalar=10.0,
                    layer_types=("sliding_attention", "full_attention")),
     sj.make_gate(np.array([[0.4, -0.3, 1.0, 0.1], [0.0, 0.5, -0.5, 2.0]]), shape=(2, 4))),
    ("qwen2", dict(n_kv_heads=2, sliding_window=6, layer_types=("full_attention", "sliding_attention")),
     sj.make_gate(0.3)),
])
def test_torch_logits_equal_sparsejax_eval(family, extra, gate, tmp_path):
    config = sj.ModelConfig(family=family, **SMALL, **extra)
    model = sj.Model(config, _params(config, 3), gate)
    sj.save_pretrained(model, tmp_path / "m")
    tokens = np.random.default_rng(0).integers(0, 64, size=(3, 20))
    ours, aux = sj.forward(config, model.params, tokens, gate, mode="eval")
    if gate is not None:
        assert 0.05 < float(aux["edge_density"].mean()) < 0.95  # a mix of open and closed gates is tested
    hf = load_sparse_model(tmp_path / "m")
    with torch.no_grad():
        theirs = hf(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(theirs, np.asarray(ours), atol=2e-4, rtol=2e-4)
    with torch.no_grad():  # KV cache: the last token alone, after a prefix, gives the full forward's last logits
        out = hf(torch.tensor(tokens[:, :-1]), use_cache=True)
        last = hf(torch.tensor(tokens[:, -1:]), past_key_values=out.past_key_values, use_cache=True).logits
    np.testing.assert_allclose(last[:, -1].numpy(), np.asarray(ours)[:, -1], atol=2e-4, rtol=2e-4)


def test_padding_mask_is_honoured(tmp_path):
    config = sj.ModelConfig(family="llama", **SMALL)
    gate = sj.make_gate(0.2)
    model = sj.Model(config, _params(config, 4), gate)
    sj.save_pretrained(model, tmp_path / "m")
    hf = load_sparse_model(tmp_path / "m")
    tokens = np.random.default_rng(1).integers(0, 64, size=(1, 12))
    ours = np.asarray(sj.forward(config, model.params, tokens, gate, mode="eval")[0])
    padded = np.concatenate([tokens, np.zeros((1, 5), tokens.dtype)], 1)  # right padding, masked out
    mask = np.concatenate([np.ones((1, 12)), np.zeros((1, 5))], 1)
    with torch.no_grad():
        theirs = hf(torch.tensor(padded), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(theirs[:, :12], ours, atol=2e-4, rtol=2e-4)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_sparse_model(tmp_path)
