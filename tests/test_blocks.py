"""The kernel package's seams: typed block sizes (validation, one default per backend, accepted by the public API
with the same results as the loose keywords), and the shard_map wrapper living outside the kernel file."""
import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.attention import BLOCK_SIZES, BlockSizes, sharded
from sparsejax.attention.pallas import pallas_attention

ATTENTION = pathlib.Path(sj.__file__).parent / "attention"


def _qkv(t=13, h=4, kvh=2, d=8):
    rng = np.random.default_rng(0)
    return [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((2, t, h, d), (2, t, kvh, d), (2, t, kvh, d))]


def test_defaults_per_backend():
    """Today's values, one frozen BlockSizes per backend."""
    assert BLOCK_SIZES["gpu"].as_dict() == dict(block_q=64, block_k=32, block_q_bwd=64, block_k_bwd=32, num_warps=4,
                                                num_stages=3, backward="split")
    assert BLOCK_SIZES["tpu"] == BlockSizes(256, 256, 256, 256)
    assert BLOCK_SIZES["interpret"] == BlockSizes(128, 128)
    with pytest.raises(Exception):
        BLOCK_SIZES["gpu"].block_q = 8  # frozen
    assert BlockSizes(32, 16).block_q_bwd == 32 and BlockSizes(32, 16).block_k_bwd == 16
    assert BlockSizes.of(None, backend="gpu", block_q=16) == BlockSizes(16, 32, 64, 32, 4, 3)
    assert BlockSizes.of({"block_k": 8}, backend="interpret") == BlockSizes(128, 8, 128, 128)


@pytest.mark.parametrize("kwargs, match", [
    (dict(block_q=0, block_k=8), "block_q must be a positive int"),
    (dict(block_q=8, block_k=8.0), "block_k must be a positive int"),
    (dict(block_q=True, block_k=8), "block_q must be a positive int"),
    (dict(block_q=8, block_k=8, block_q_bwd=-4), "block_q_bwd must be a positive int"),
    (dict(block_q=8, block_k=8, num_warps=3), "num_warps must be a power of two"),
    (dict(block_q=8, block_k=8, num_stages=0), "num_stages must be a positive int"),
    (dict(block_q=8, block_k=8, backward="fused"), "backward='fused' is not available"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockSizes(**kwargs)


def test_backend_checks():
    with pytest.raises(ValueError, match="no atomic adds"):
        BlockSizes(256, 256, backward="atomic").check("tpu")
    with pytest.raises(ValueError, match="powers of two"):
        BlockSizes(48, 32).check("gpu")
    assert BlockSizes(48, 32).check("interpret").block_q == 48
    with pytest.raises(ValueError, match="unknown Pallas backend"):
        BlockSizes.of(None, backend="cuda")
    with pytest.raises(ValueError, match="unknown block option"):
        BlockSizes.of(None, backend="gpu", block_x=8)
    with pytest.raises(ValueError, match="a BlockSizes or a mapping"):
        BlockSizes.of(64, backend="gpu")


def test_public_api_takes_block_sizes_as_the_keywords_do():
    q, k, v = _qkv()
    gate = sj.Gate(jnp.asarray([0.4, -0.3, 0.9, 0.0]))
    bs = BlockSizes(block_q=8, block_k=4, block_q_bwd=4, block_k_bwd=8)

    def run(impl, **kw):
        def loss(qq):
            out, st = sj.sparse_attention(qq, k, v, gate, mode="train", seed=3, implementation=impl, **kw)
            return jnp.sum(out ** 2) + jnp.sum(st.expected_density), out
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(q)

    want = run("pallas", **bs.as_dict())
    for got in (run("pallas", block_sizes=bs), run("pallas", block_sizes=bs.as_dict()),
                run("pallas", block_sizes=BlockSizes(8, 8, 4, 8), block_k=4)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(a, b)
    want = run("chunked", block_q=8, block_k=4)
    for got in (run("chunked", block_sizes=bs), run("auto", block_sizes=bs), run("chunked", block_sizes={"block_q": 8},
                                                                                   block_k=4)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="apply only to implementation='chunked' or 'pallas'"):
        sj.sparse_attention(q, k, v, gate, mode="eval", implementation="reference", block_sizes=bs)
    with pytest.raises(ValueError, match="block_q/block_k only"):
        sj.sparse_attention(q, k, v, gate, mode="eval", implementation="chunked", block_sizes={"num_warps": 4})
    with pytest.raises(ValueError, match="a BlockSizes or a mapping"):
        sj.sparse_attention(q, k, v, gate, mode="eval", implementation="pallas", block_sizes=(8, 8))
    with pytest.raises(ValueError, match="powers of two"):
        pallas_attention(*_qkv(d=16), None, causal=True, train=False, seed=None, return_adjacency=False,
                         backend="gpu", block_q=24)


def _imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
            names.update(f"{'.' * node.level}{node.module or ''}:{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_kernel_file_knows_no_mesh():
    """The trainer's sharding rules reach the kernel only through the dispatch (``partition=``): pallas.py imports
    neither ``sparsejax.sharding`` nor ``shard_map``."""
    imports = _imports(ATTENTION / "pallas.py")
    assert not any("sharding" in n or "sharded" in n for n in imports), imports
    names = {n.attr if isinstance(n, ast.Attribute) else n.id
             for n in ast.walk(ast.parse((ATTENTION / "pallas.py").read_text()))
             if isinstance(n, (ast.Attribute, ast.Name))}
    assert not names & {"shard_map", "active_rules", "get_abstract_mesh", "logical_spec"}, names
    assert "shard_map" in (ATTENTION / "sharded.py").read_text()


def test_partition_without_a_mesh_is_one_device():
    mesh = jax.sharding.get_abstract_mesh()
    assert sharded.partition_for(mesh, None) is sharded.unsharded
    assert sharded.partition_for(mesh, (("batch", ("data",)),)) is sharded.unsharded  # no mesh set: empty
    seen = []
    sharded.unsharded(lambda *a: seen.append(np.asarray(a[-1])), 1, 2, 3, 4, 5)
    np.testing.assert_array_equal(seen[0], [0, 0])
