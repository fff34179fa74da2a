"""Tests of the Cond-FiP networks: DAG attention, the blocks, the encoder and the decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfip_jax.nn import (
    CondFiPDecoder,
    DatasetEncoder,
    dag_attention,
    dag_attention_weights,
    decoder_arch,
    encoder_arch,
    sample_attention,
)
from cfip_jax.nn.layers import AdaLNBlock, PreLNBlock

B, N, N_SAMPLES = 2, 6, 5

# ---------------------------------------------------------------- helpers


def random_dags(rng, batch, d, p=0.5):
    """``[batch, d, d]`` DAGs (adj[i, j] = 1 ⇔ i → j) in a random node order."""
    adj = np.triu(rng.random((batch, d, d)) < p, k=1).astype(np.float32)
    perm = rng.permutation(d)
    return adj[:, perm][:, :, perm]


def ancestors(adj):
    """``[d, d]`` bool, ``anc[i, j]`` True iff j is an ancestor of i (a directed path j → … → i)."""
    reach = adj.T.astype(bool)  # reach[i, j]: j -> i
    for _ in range(adj.shape[0]):
        reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
    return reach


def np_ln(x, p):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * p["scale"] + p["bias"]


def np_lin(x, p):
    return x @ p["kernel"] + p.get("bias", 0.0)


def np_dag_weights(s, mask):
    e = np.where(mask, np.exp(np.where(mask, s, 0.0)), 0.0)
    return e / np.maximum(e.sum(-1, keepdims=True), 1.0)


def np_attention(q, k, v, heads, mask, axis):
    """Reference multi-head attention in float64 on ``[B, n, N, H·d]`` inputs."""
    split = lambda t: t.reshape(t.shape[:-1] + (heads, -1))
    q, k, v = split(q), split(k), split(v)
    q = np.broadcast_to(q, k.shape)
    scale = 1.0 / np.sqrt(q.shape[-1])
    if axis == "sample":
        s = np.einsum("bqihd,bkihd->bihqk", q, k) * scale
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        out = np.einsum("bihqk,bkihd->bqihd", w, v)
    else:
        s = np.einsum("bsihd,bsjhd->bshij", q, k) * scale
        out = np.einsum("bshij,bsjhd->bsihd", np_dag_weights(s, mask[:, None, None]), v)
    return out.reshape(out.shape[:-2] + (-1,))


def np_mlp(x, p):
    return np_lin(np.maximum(np_lin(x, p["hidden"]), 0.0), p["out"])


def np_preln(p, x, mask, heads, axis):
    a = np_attention(np_lin(np_ln(x, p["norm_q"]), p["query"]), np_lin(np_ln(x, p["norm_k"]), p["key"]),
                     np_lin(np_ln(x, p["norm_v"]), p["value"]), heads, mask, axis)  # fmt: skip
    x = x + np_lin(a, p["out"])
    return x + np_mlp(np_ln(x, p["norm_mlp"]), p["mlp"])


def np_ada(p, q, z, v_emb, p_emb, c, mask, heads):
    kv = z[..., None] * v_emb + p_emb
    silu = c / (1.0 + np.exp(-c))
    b1, g1, a1, b2, g2, a2 = np.split(np_lin(silu, p["modulation"]), 6, -1)
    mod = lambda t, b, g: t * (1 + g) + b
    a = np_attention(np_lin(mod(np_ln(q, p["norm_q"]), b1, g1), p["query"]),
                     np_lin(mod(np_ln(kv, p["norm_k"]), b1, g1), p["key"]),
                     np_lin(mod(np_ln(kv, p["norm_v"]), b1, g1), p["value"]), heads, mask, "node")  # fmt: skip
    x = q + a1 * np_lin(a, p["out"])
    return x + a2 * np_mlp(mod(np_ln(x, p["norm_mlp"]), b2, g2), p["mlp"])


def perturbed(params, rng, scale=0.3):
    """Parameters moved away from the LayerNorm init (scale 1, bias 0) so that every term is exercised."""
    return jax.tree.map(lambda t: t + scale * jnp.asarray(rng.normal(size=t.shape), jnp.float32), params)


def to_np(tree):
    return jax.tree.map(lambda t: np.asarray(t, np.float64), tree)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    adj = random_dags(rng, B, N)
    adj[0, :, :] = 0  # dataset 0: a chain 0 -> 1 -> 2 -> 3 plus 1 -> 4, node 5 isolated
    adj[0, 0, 1] = adj[0, 1, 2] = adj[0, 2, 3] = adj[0, 1, 4] = 1
    x = rng.normal(size=(B, N_SAMPLES, N)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(adj), jnp.ones((B, N), bool)


@pytest.fixture(scope="module")
def encoder(data):
    x, adj, mask = data
    model = DatasetEncoder(encoder_arch("small"))
    params = perturbed(model.init(jax.random.key(0), x, adj, mask), np.random.default_rng(1), 0.1)
    return model, params, jax.jit(lambda p, x, a, m: model.apply(p, x, a, m))


@pytest.fixture(scope="module")
def decoder(data):
    x, adj, mask = data
    model = CondFiPDecoder(decoder_arch("small", dropout=0.1))
    enc = jnp.asarray(np.random.default_rng(2).normal(size=(B, N_SAMPLES, N, 64)), jnp.float32)
    params = perturbed(model.init(jax.random.key(1), x, enc, adj, mask), np.random.default_rng(3), 0.1)
    fn = jax.jit(lambda p, z, e, a, m: model.apply(p, z, e, a, m))
    return model, params, enc, fn


# ---------------------------------------------------------------- configurations and parameter counts


def test_reference_parameter_counts():
    """Exactly the reference's trainable parameters less its two unused embedding tables."""
    count = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
    x, adj, mask = jnp.zeros((1, 4, 3)), jnp.zeros((1, 3, 3)), jnp.ones((1, 3), bool)
    enc = jax.eval_shape(DatasetEncoder(encoder_arch()).init, jax.random.key(0), x, adj, mask)
    dec = jax.eval_shape(
        CondFiPDecoder(decoder_arch()).init, jax.random.key(0), x, jnp.zeros((1, 4, 3, 256)), adj, mask
    )
    assert count(enc) == 5_539_841
    assert count(dec) == 8_173_057


def test_config_validation():
    assert encoder_arch("small", dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="size"):
        encoder_arch("huge")
    with pytest.raises(ValueError, match="config field"):
        decoder_arch(width=3)
    with pytest.raises(ValueError, match="dtype"):
        decoder_arch(dtype="float16")


# ---------------------------------------------------------------- DAG attention


def test_dag_weights_match_formula_in_float64():
    rng = np.random.default_rng(0)
    scores = rng.normal(scale=2.0, size=(3, 7, 7))
    scores[1] -= 4.0  # small scores: the row sums fall below 1 (not a softmax)
    mask = rng.random((3, 7, 7)) < 0.5
    mask[:, 2, :] = False  # a root row
    w = np.asarray(dag_attention_weights(jnp.asarray(scores, jnp.float32), jnp.asarray(mask)))
    np.testing.assert_allclose(w, np_dag_weights(scores, mask), rtol=1e-5, atol=1e-7)
    assert np.all(w[:, 2, :] == 0.0)
    assert np.all(w[~mask] == 0.0)
    sums = w.sum(-1)[mask.any(-1)]
    assert np.all(sums <= 1.0 + 1e-6) and np.any(sums < 0.5)  # partial mass, unlike softmax or a null logit
    null_logit = np.exp(scores) * mask / (1.0 + (np.exp(scores) * mask).sum(-1, keepdims=True))
    assert not np.allclose(w, null_logit, atol=1e-3)


def test_dag_attention_stable_and_finite():
    mask = jnp.asarray([[[False, False, False], [True, False, False], [True, True, False]]])
    for big in (1e4, -1e4):  # huge logits: no overflow, no NaN; very negative ones: weights vanish
        s = jnp.full((1, 3, 3), big)
        w = dag_attention_weights(s, mask)
        assert bool(jnp.all(jnp.isfinite(w)))
    w = dag_attention_weights(jnp.full((1, 3, 3), 1e4), mask)
    np.testing.assert_allclose(np.asarray(w[0, 2]), [0.5, 0.5, 0.0], atol=1e-6)
    rng = np.random.default_rng(1)
    for dtype in (jnp.float32, jnp.bfloat16):
        q, k, v = (jnp.asarray(rng.normal(scale=30.0, size=(2, 4, 3, 2, 8)), dtype) for _ in range(3))
        out = dag_attention(q, k, v, jnp.broadcast_to(mask, (2, 3, 3)))
        assert out.dtype == dtype and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))
        assert bool(jnp.all(out[:, :, 0] == 0))  # root node 0: exactly zero
        grads = jax.grad(lambda q, k, v: jnp.sum(dag_attention(q, k, v, mask).astype(jnp.float32) ** 2),
                         argnums=(0, 1, 2))(q, k, v)  # fmt: skip
        assert all(bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in grads)


def test_dag_attention_attends_to_parents_only():
    """Query node i reads key j iff adj[j, i] = 1 (changing a non-parent's key or value changes nothing)."""
    rng = np.random.default_rng(2)
    mask = jnp.asarray(rng.random((1, 5, 5)) < 0.5)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 2, 5, 2, 4)), jnp.float32) for _ in range(3))
    jac = jax.jacrev(lambda v: dag_attention(q, k, v, mask))(v)  # [1,2,5,2,4, 1,2,5,2,4]
    influence = np.abs(np.asarray(jac)).sum(axis=(0, 1, 3, 4, 5, 6, 8, 9)) > 0  # [query node, key node]
    np.testing.assert_array_equal(influence, np.asarray(mask[0]))


def test_factored_dag_attention_equals_attention_on_formed_keys():
    """K = a·A + b·B + C: the affine evaluation equals DAG attention on the formed K and V (n_q = 1 and n)."""
    from cfip_jax.nn.attention import dag_attention_factored, dag_attention_heads

    rng = np.random.default_rng(4)
    b, n, h, nodes, d = 2, 5, 3, 6, 4
    keys, values = ([jnp.asarray(rng.normal(size=(b, 1, h, nodes, d)), jnp.float32) for _ in range(3)] for _ in "kv")
    coef_a, coef_b = (jnp.asarray(rng.normal(size=(b, n, nodes)), jnp.float32) for _ in range(2))
    adj = random_dags(rng, b, nodes)
    for query_nodes in (list(range(nodes)), [3, 0]):
        mask = jnp.asarray(np.swapaxes(adj, 1, 2)[:, query_nodes] != 0)
        form = lambda p: coef_a[:, :, None, :, None] * p[0] + coef_b[:, :, None, :, None] * p[1] + p[2]  # noqa: E731
        for n_q in (1, n):
            q = jnp.asarray(rng.normal(size=(b, n_q, h, len(query_nodes), d)), jnp.float32)
            expected = np.asarray(dag_attention_heads(q, form(keys), form(values), mask))
            for affine in (True, False, None):
                out = dag_attention_factored(q, coef_a, coef_b, keys, values, mask, affine=affine)
                assert out.shape == (b, n, h, len(query_nodes), d)
                np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
            roots = ~np.asarray(mask).any(-1)  # [b, M]: nodes without parents get exactly 0
            assert roots.any() and np.all(np.asarray(out).transpose(0, 3, 1, 2, 4)[roots] == 0.0)
            low = dag_attention_factored(q.astype(jnp.bfloat16), coef_a, coef_b, keys, values, mask, affine=True)
            assert low.dtype == jnp.bfloat16  # bfloat16 queries, eagerly: computed in float32, returned in bfloat16
            np.testing.assert_allclose(np.asarray(low, np.float32), expected, rtol=0.05, atol=0.05)


def test_sample_attention_matches_softmax():
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 5, 3, 2, 4)) for _ in range(3))
    out = sample_attention(*(jnp.asarray(t, jnp.float32) for t in (q, k, v)))
    flat = lambda t: t.reshape(2, 5, 3, 8)
    expected = np_attention(flat(q), flat(k), flat(v), 2, None, "sample").reshape(out.shape)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- blocks equal the direct formulas


@pytest.mark.parametrize("axis", ["sample", "node"])
def test_preln_block_matches_direct_formula(axis):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, 5, 16))
    mask = rng.random((2, 5, 5)) < 0.4
    block = PreLNBlock(num_heads=2, key_dim=4, mlp_dim=24, axis=axis)
    params = perturbed(block.init(jax.random.key(0), jnp.asarray(x, jnp.float32), jnp.asarray(mask)), rng)
    out = block.apply(params, jnp.asarray(x, jnp.float32), jnp.asarray(mask))
    expected = np_preln(to_np(params["params"]), x, mask, 2, axis)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


def test_adaln_block_matches_direct_formula():
    """The factored key/value path equals LN, modulation and projection of Z = z·V + P formed explicitly."""
    rng = np.random.default_rng(5)
    z = rng.normal(scale=2.0, size=(2, 4, 5))
    v_emb, p_emb, c = (rng.normal(size=(2, 1, 5, 16)) for _ in range(3))
    mask = rng.random((2, 5, 5)) < 0.4
    block = AdaLNBlock(num_heads=2, key_dim=4, mlp_dim=24)
    f32 = lambda t: jnp.asarray(t, jnp.float32)
    params = perturbed(block.init(jax.random.key(0), f32(p_emb), f32(z), f32(v_emb), f32(p_emb), f32(c), mask), rng)
    for q in (p_emb, rng.normal(size=(2, 4, 5, 16))):  # the first layer's broadcast queries, then a full stream
        out = block.apply(params, f32(q), f32(z), f32(v_emb), f32(p_emb), f32(c), jnp.asarray(mask))
        expected = np_ada(to_np(params["params"]), q, z, v_emb, p_emb, c, mask, 2)
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- encoder


def test_encoder_depends_only_on_ancestors(data, encoder):
    """∂F̂[s, i]/∂x[s', j] = 0 unless j is i or an ancestor of i; a parent's influence is nonzero."""
    x, adj, mask = data
    model, params, _ = encoder
    jac = jax.jacrev(lambda x: model.apply(params, x, adj, mask))(x)  # [B, n, N, B, n, N]
    for b in range(B):
        influence = np.abs(np.asarray(jac[b, :, :, b])).max(axis=(0, 2))  # [i, j]
        allowed = ancestors(np.asarray(adj[b])) | np.eye(N, dtype=bool)
        assert np.all(influence[~allowed] == 0.0)
        parents = np.asarray(adj[b]).T.astype(bool)
        assert np.all(influence[parents] > 0.0)
    assert np.all(np.asarray(jac[0, :, :, 1]) == 0.0)  # datasets are independent
    # dataset 0 has the path 0 -> 1 -> 2: with 2 layers the grandparent reaches node 2
    assert np.abs(np.asarray(jac[0, :, 2, 0, :, 0])).max() > 0.0


def test_encoder_node_relabelling_and_padding(data, encoder):
    x, adj, mask = data
    model, params, fn = encoder
    out = fn(params, x, adj, mask)
    perm = np.random.default_rng(6).permutation(N)
    out_perm = fn(params, x[..., perm], adj[:, perm][:, :, perm], mask)
    np.testing.assert_allclose(np.asarray(out_perm), np.asarray(out[..., perm]), rtol=1e-5, atol=1e-5)
    # pad to N + 2 nodes with garbage data: real nodes unchanged, padded outputs 0
    garbage = jnp.asarray(np.random.default_rng(7).normal(size=(B, N_SAMPLES, 2)), jnp.float32)
    x_pad = jnp.concatenate([x, garbage], -1)
    adj_pad = jnp.pad(adj, ((0, 0), (0, 2), (0, 2))).at[:, 0, N].set(1.0)  # even an edge into a padded node
    mask_pad = jnp.pad(mask, ((0, 0), (0, 2)))
    out_pad = model.apply(params, x_pad, adj_pad, mask_pad)
    np.testing.assert_allclose(np.asarray(out_pad[..., :N]), np.asarray(out), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out_pad[..., N:]) == 0.0)
    enc_pad = model.apply(params, x_pad, adj_pad, mask_pad, method="encode")
    assert enc_pad.shape == (B, N_SAMPLES, N + 2, 64) and np.all(np.asarray(enc_pad[:, :, N:]) == 0.0)


def test_encoder_sample_permutation_equivariant(data, encoder):
    x, adj, mask = data
    model, params, fn = encoder
    perm = np.random.default_rng(8).permutation(N_SAMPLES)
    np.testing.assert_allclose(
        np.asarray(fn(params, x[:, perm], adj, mask)), np.asarray(fn(params, x, adj, mask)[:, perm]), rtol=1e-5,
        atol=1e-5,
    )  # fmt: skip


# ---------------------------------------------------------------- decoder


def test_decoder_jacobian_follows_parents(data, decoder):
    """∂T[s, i]/∂z[s', j] = 0 unless s = s' and j is a parent of i; nonzero for every parent."""
    x, adj, mask = data
    model, params, enc, _ = decoder
    cond = model.apply(params, enc, adj, mask, method="embed")
    jac = jax.jacrev(lambda z: model.apply(params, z, cond, adj, mask, method="decode"))(x)  # [B,n,N,B,n,N]
    jac = np.asarray(jac)
    for b in range(B):
        parents = np.asarray(adj[b]).T.astype(bool)  # [i, j]: j -> i
        for s in range(N_SAMPLES):
            block = jac[b, s, :, b, s, :]
            assert np.all(block[~parents] == 0.0)
            assert np.all(np.abs(block[parents]) > 0.0)
        off = jac[b, :, :, b].copy()
        off[np.arange(N_SAMPLES), :, np.arange(N_SAMPLES), :] = 0.0
        assert np.all(off == 0.0)  # samples are decoded independently


def test_decoder_invariances(data, decoder):
    x, adj, mask = data
    model, params, enc, fn = decoder
    out = fn(params, x, enc, adj, mask)
    # node relabelling permutes the outputs
    perm = np.random.default_rng(9).permutation(N)
    out_perm = fn(params, x[..., perm], enc[:, :, perm], adj[:, perm][:, :, perm], mask)
    np.testing.assert_allclose(np.asarray(out_perm), np.asarray(out[..., perm]), rtol=1e-5, atol=1e-5)
    # the dataset embedding does not depend on the order of the context samples
    sperm = np.random.default_rng(10).permutation(N_SAMPLES)
    embed = jax.jit(lambda p, e: model.apply(p, e, adj, mask, method="embed"))
    c1, c2 = embed(params, enc), embed(params, enc[:, sperm])
    for a, b in zip(jax.tree.leaves(c1), jax.tree.leaves(c2), strict=True):
        assert a.shape == (B, 1, N, 64)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # padding (garbage on padded nodes, even an edge to one) leaves real nodes unchanged, padded outputs 0
    rng = np.random.default_rng(11)
    x_pad = jnp.concatenate([x, jnp.asarray(rng.normal(size=(B, N_SAMPLES, 1)), jnp.float32)], -1)
    enc_pad = jnp.concatenate([enc, jnp.asarray(rng.normal(size=(B, N_SAMPLES, 1, 64)), jnp.float32)], 2)
    adj_pad = jnp.pad(adj, ((0, 0), (0, 1), (0, 1))).at[:, N, 0].set(1.0)
    mask_pad = jnp.pad(mask, ((0, 0), (0, 1)))
    out_pad = model.apply(params, x_pad, enc_pad, adj_pad, mask_pad)
    np.testing.assert_allclose(np.asarray(out_pad[..., :N]), np.asarray(out), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out_pad[..., N:]) == 0.0)


def test_decoder_dropout_and_gradients(data, decoder):
    """Dropout acts only when asked (rng stream "dropout"); gradients are finite with roots and padding."""
    x, adj, mask = data
    model, params, enc, fn = decoder
    kw = dict(deterministic=False)
    d1 = model.apply(params, x, enc, adj, mask, rngs={"dropout": jax.random.key(0)}, **kw)
    d2 = model.apply(params, x, enc, adj, mask, rngs={"dropout": jax.random.key(0)}, **kw)
    d3 = model.apply(params, x, enc, adj, mask, rngs={"dropout": jax.random.key(1)}, **kw)
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))
    assert not np.allclose(np.asarray(d1), np.asarray(d3))
    assert not np.allclose(np.asarray(d1), np.asarray(fn(params, x, enc, adj, mask)))
    mask_pad = mask.at[:, -1].set(False)  # the last node becomes padding
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x, enc, adj, mask_pad) ** 2))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_bfloat16_compute_is_finite_and_close(data):
    x, adj, mask = data
    f32 = DatasetEncoder(encoder_arch("small"))
    bf16 = DatasetEncoder(encoder_arch("small", dtype="bfloat16"))
    params = f32.init(jax.random.key(0), x, adj, mask)
    out32, out16 = f32.apply(params, x, adj, mask), bf16.apply(params, x, adj, mask)
    assert out16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out16)))
    rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
    assert 0.0 < rel < 0.05
    grads = jax.grad(lambda p: jnp.sum(bf16.apply(p, x, adj, mask) ** 2))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_decode_nodes_equals_the_full_decode_on_those_nodes(data, decoder):
    x, adj, mask = data
    model, params, enc, _ = decoder
    cond = model.apply(params, enc, adj, mask, method="embed")
    full = np.asarray(model.apply(params, x, cond, adj, mask, method="decode"))
    for nodes in ([0], [4, 1, 1], list(range(N))[::-1]):
        part = model.apply(params, x, cond, adj, jnp.asarray(nodes), mask, method="decode_nodes")
        np.testing.assert_allclose(np.asarray(part), full[..., nodes], rtol=1e-5, atol=1e-6)
    padded = mask.at[:, 2].set(False)  # a padded query node decodes to 0
    part = model.apply(params, x, cond, adj, jnp.asarray([2, 3]), padded, method="decode_nodes")
    assert np.all(np.asarray(part)[..., 0] == 0.0)


def test_forward_passes_equal_those_of_the_code_before_the_throughput_rewrite():
    """Small networks initialised from fixed keys (the initialisation is unchanged by the rewrite), their encoder and
    decoder outputs on fixed inputs (one dataset padded), recorded with the code before the 2-D product rewrite
    (commit 9074662; tests/data/forward_golden.npz): the rewrite changes no output beyond float32 rounding."""
    import pathlib

    golden = np.load(pathlib.Path(__file__).parent / "data" / "forward_golden.npz", allow_pickle=False)
    x, adj, mask = (jnp.asarray(golden[k]) for k in ("x", "adj", "mask"))
    enc_cfg = encoder_arch("small")
    enc = DatasetEncoder(config=enc_cfg)
    dec = CondFiPDecoder(config=decoder_arch("small", encoder_dim=enc_cfg.d_model, dropout=0.0))
    enc_params = enc.init(jax.random.key(0), x, adj, mask)
    encoding = enc.apply(enc_params, x[:, :12], adj, mask, method="encode")
    dec_params = dec.init(jax.random.key(1), x[:, 12:], encoding, adj, mask)
    enc_out = enc.apply(enc_params, x, adj, mask)
    dec_out = dec.apply(dec_params, x[:, 12:], encoding, adj, mask)
    np.testing.assert_allclose(np.asarray(enc_out), golden["encoder"], rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(dec_out), golden["decoder"], rtol=1e-5, atol=2e-5)
