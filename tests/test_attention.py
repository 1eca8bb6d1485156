"""Tests of ``rnnkit.attention`` (additive, dot, general; the C++ kernels behind them) against
the NumPy oracle ``rnnkit.reference_attention``, finite differences, masking semantics, the
module classes' step interface, torch (scaled dot-product attention) and argument errors.

Both kernel paths are covered: few query steps (loops) and T >= 8 (per-row GEMMs).
"""

import numpy as np
import pytest

from conftest import assert_close, finite_difference
from rnnkit import _core
from rnnkit import attention as A
from rnnkit import reference_attention as R

B, S, Hq, Hk, Hv, AS = 3, 6, 5, 4, 7, 8
KINDS = ("additive", "dot", "general")


def make_inputs(kind, T, dtype, rng, masked=True, bias=True):
    """(args, kwargs) for ``<kind>_attention_forward``; T None gives a 2-d (one-step) query."""

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    q = r(B, Hq) if T is None else r(B, T, Hq)
    keys = r(B, S, Hq if kind == "dot" else Hk)
    values = r(B, S, Hv)
    mask = None
    if masked:
        mask = np.ones((B, S), bool)
        mask[1, 4:] = False  # padding
        mask[2, 1:] = False  # a single real step
    if kind == "additive":
        args = (q, keys, values, r(AS, Hq), r(AS, Hk), r(AS), r(AS) if bias else None)
        return args, {"mask": mask}
    if kind == "dot":
        return (q, keys, values), {"mask": mask, "scale": 0.7}
    return (q, keys, values, r(Hq, Hk) * 0.5), {"mask": mask}


def fwd(mod, kind):
    return getattr(mod, f"{kind}_attention_forward")


def bwd(mod, kind):
    return getattr(mod, f"{kind}_attention_backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T", [None, 1, 3, 9])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_oracle(kind, T, dtype, rng):
    args, kw = make_inputs(kind, T, dtype, rng, masked=T != 3)
    ctx, w, cache = fwd(A, kind)(*args, **kw)
    ctx_r, w_r, cache_r = fwd(R, kind)(*args, **kw)
    assert ctx.dtype == w.dtype == dtype
    assert_close(ctx, ctx_r, dtype, "context")
    assert_close(w, w_r, dtype, "weights")
    dctx = rng.standard_normal(ctx.shape).astype(dtype)
    dw = rng.standard_normal(w.shape).astype(dtype)
    for dc, dww in ((dctx, dw), (dctx, None), (None, dw)):
        g = bwd(A, kind)(dc, dww, cache)
        g_r = bwd(R, kind)(dc, dww, cache_r)
        assert type(g) is type(g_r)
        for name, a, b in zip(g._fields, g, g_r):
            assert_close(a, b, dtype, name)
    g = bwd(A, kind)(None, None, cache)
    assert all(x is None or not x.any() for x in g)


@pytest.mark.parametrize("T", [None, 2, 8])
@pytest.mark.parametrize("kind", KINDS)
def test_finite_differences(kind, T, rng):
    """The C++-backed gradients of L = sum(Gc * context) + sum(Gw * weights) w.r.t. every
    input, against central differences (float64)."""
    args, kw = make_inputs(kind, T, np.float64, rng)
    ctx, w, cache = fwd(A, kind)(*args, **kw)
    Gc, Gw = rng.standard_normal(ctx.shape), rng.standard_normal(w.shape)
    grads = bwd(A, kind)(Gc, Gw, cache)

    def loss():
        c, ww, _ = fwd(A, kind)(*args, **kw, training=False)
        return float((Gc * c).sum() + (Gw * ww).sum())

    for arr, g, name in zip(args, grads, grads._fields):
        if arr is None:
            assert g is None, name
            continue
        num = finite_difference(loss, arr)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_masking(kind, rng):
    """Masked steps get weight 0, do not influence anything and get zero gradient; a row with
    nothing to attend to has zero weights, a zero context and zero gradients."""
    args, kw = make_inputs(kind, 4, np.float64, rng)
    mask = kw["mask"]
    ctx, w, cache = fwd(A, kind)(*args, **kw)
    assert (w[~np.broadcast_to(mask[:, None, :], w.shape)] == 0).all()
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-12)
    # change the padded keys and values: nothing changes
    args2 = list(args)
    for k in (1, 2):
        a = args2[k].copy()
        a[~mask] = 1e3 * rng.standard_normal(a[~mask].shape)
        args2[k] = a
    ctx2, w2, _ = fwd(A, kind)(*args2, **kw)
    np.testing.assert_array_equal(ctx, ctx2)
    np.testing.assert_array_equal(w, w2)
    g = bwd(A, kind)(np.ones_like(ctx), np.ones_like(w), cache)
    assert not g.dkeys[~mask].any() and not g.dvalues[~mask].any()
    # fully masked row
    kw["mask"] = mask.copy()
    kw["mask"][0] = False
    ctx, w, cache = fwd(A, kind)(*args, **kw)
    assert not w[0].any() and not ctx[0].any() and np.isfinite(ctx).all()
    g = bwd(A, kind)(np.ones_like(ctx), np.ones_like(w), cache)
    assert not g.dquery[0].any() and not g.dkeys[0].any() and not g.dvalues[0].any()
    assert all(np.isfinite(x).all() for x in g if x is not None)


def test_mask_forms_and_lengths_to_mask(rng):
    args, kw = make_inputs("dot", 2, np.float64, rng, masked=False)
    lengths = np.array([6, 3, 1])
    m = A.lengths_to_mask(lengths, S)
    assert m.dtype == bool and m.sum(1).tolist() == [6, 3, 1]
    ref = A.dot_attention_forward(*args, mask=m)[:2]
    for form in (m.astype(np.int64), m.astype(np.uint8), np.asfortranarray(m)):
        got = A.dot_attention_forward(*args, mask=form)[:2]
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(A.lengths_to_mask([0, 2], 2), [[False, False], [True, True]])
    with pytest.raises(ValueError, match="lengths"):
        A.lengths_to_mask([7], 6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_module_steps_equal_whole_sequence(kind, dtype, rng):
    """The module's per-step interface (what a decoder uses) gives the whole-sequence results
    and accumulates the same parameter gradients; the functional API agrees with the module."""
    T = 4
    Hk_ = Hq if kind == "dot" else Hk
    mod = A.make_attention(kind, Hq, Hk_, AS, dtype=dtype, seed=0)
    q = rng.standard_normal((B, T, Hq)).astype(dtype)
    keys = rng.standard_normal((B, S, Hk_)).astype(dtype)
    mask = A.lengths_to_mask(np.array([6, 2, 4]), S)
    ctx, w = mod(q, keys, None, mask)
    dctx = rng.standard_normal(ctx.shape).astype(dtype)
    mod.zero_grad()
    dq, dk, dv = mod.backward(dctx)
    assert dv is None  # values were the keys: dk holds both
    full = {n: p.grad.copy() for n, p in mod.named_parameters()}

    mod.zero_grad()
    mem = mod.memory(keys, None, mask)
    grads = mod.new_grads(mem)
    steps = [mod.attend(q[:, t], mem) for t in range(T)]
    dqs = []
    for t, (c, ww, cache) in enumerate(steps):
        assert_close(c, ctx[:, t], dtype, "context step")
        assert_close(ww, w[:, t], dtype, "weights step")
        dqs.append(mod.attend_backward(dctx[:, t], None, cache, grads))
    dkeys, dvalues = mod.memory_backward(mem, grads)
    assert_close(np.stack(dqs, 1), dq, dtype, "dquery")
    assert_close(dkeys + dvalues, dk, dtype, "dkeys")
    for n, p in mod.named_parameters():
        assert_close(p.grad, full[n], dtype, n)

    # the functional API with the module's parameters
    if kind == "additive":
        args = (q, keys, keys, mod.query.weight.data, mod.key.weight.data, mod.v.data)
        names = {"dW_q": "query.weight", "dW_k": "key.weight", "dv": "v"}
    elif kind == "general":
        args, names = (q, keys, keys, mod.weight.data), {"dW_a": "weight"}
    else:
        args, names = (q, keys, keys), {}
    c2, w2, cache2 = fwd(A, kind)(*args, mask=mask)
    assert_close(c2, ctx, dtype, "functional context")
    g = bwd(A, kind)(dctx, None, cache2)
    for field, pname in names.items():
        assert_close(getattr(g, field), full[pname], dtype, pname)
    assert_close(g.dkeys + g.dvalues, dk, dtype, "functional dkeys")


def test_module_parameters_and_memory_take(rng):
    add = A.AdditiveAttention(6, 4, 5, bias=True, seed=1)
    assert [n for n, _ in add.named_parameters()] == ["v", "query.weight", "query.bias", "key.weight"]
    assert add.query.weight.shape == (5, 6) and add.key.weight.shape == (5, 4)
    gen = A.GeneralAttention(6, 4)
    assert [n for n, _ in gen.named_parameters()] == ["weight"] and gen.weight.shape == (6, 4)
    assert A.DotAttention(6).parameters() == []
    with pytest.raises(ValueError, match="key_size"):
        A.DotAttention(6, 4)
    keys = rng.standard_normal((2, 3, 4)).astype(np.float32)
    mem = add.memory(keys, None, [[1, 1, 0], [1, 1, 1]])
    rep = mem.repeat(3)
    assert rep.keys.shape == (6, 3, 4) and rep.values is rep.keys
    np.testing.assert_array_equal(rep.proj[3], mem.proj[1])
    np.testing.assert_array_equal(rep.mask[:3], np.repeat(mem.mask[:1], 3, 0))
    q = rng.standard_normal((6, 6)).astype(np.float32)
    c, w, cache = add.attend(q, rep, keep=False)
    assert cache is None and c.shape == (6, 4) and w.shape == (6, 3) and not w[:3, 2].any()


def test_matches_torch_scaled_dot_product(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    T, H = 5, 8
    q = rng.standard_normal((B, T, H))
    k = rng.standard_normal((B, S, H))
    val = rng.standard_normal((B, S, Hv))
    mask = A.lengths_to_mask(np.array([6, 3, 1]), S)
    scale = 1 / np.sqrt(H)
    ctx, w, cache = A.dot_attention_forward(q, k, val, mask=mask, scale=scale)
    dctx = rng.standard_normal(ctx.shape)
    g = A.dot_attention_backward(dctx, None, cache)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, val))
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(mask)[:, None, :], scale=scale)
    out.backward(torch.tensor(dctx))
    np.testing.assert_allclose(ctx, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, t in ((g.dquery, tq), (g.dkeys, tk), (g.dvalues, tv)):
        np.testing.assert_allclose(mine, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_errors(rng):
    args, kw = make_inputs("additive", 2, np.float32, rng)
    q, keys, values, W_q, W_k, v, b = args
    f = A.additive_attention_forward
    with pytest.raises(ValueError, match=r"query: expected 3 dimensions"):
        f(q[0, 0], keys, values, W_q, W_k, v)
    with pytest.raises(ValueError, match=r"keys: expected batch size B = 3"):
        f(q, keys[:2], values, W_q, W_k, v)
    with pytest.raises(ValueError, match=r"values: expected shape \(B, S, Hv\)"):
        f(q, keys, values[:, :2], W_q, W_k, v)
    with pytest.raises(ValueError, match=r"W_k: expected shape \(A, Hk\)"):
        f(q, keys, values, W_q, W_k[:, :2], v)
    with pytest.raises(ValueError, match=r"v: expected shape \(A,\)"):
        f(q, keys, values, W_q, W_k, v[:3])
    with pytest.raises(TypeError, match=r"keys: expected dtype float32"):
        f(q, keys.astype(np.float64), values, W_q, W_k, v)
    with pytest.raises(TypeError, match=r"query: expected a float32 or float64"):
        f(q.astype(np.int32), keys, values, W_q, W_k, v)
    with pytest.raises(ValueError, match=r"mask: expected shape \(B, S\)"):
        f(q, keys, values, W_q, W_k, v, mask=np.ones((3, 2), bool))
    with pytest.raises(TypeError, match=r"mask: expected a bool"):
        f(q, keys, values, W_q, W_k, v, mask=np.ones((B, S)))
    with pytest.raises(ValueError, match="keys: expected shape .* dot attention"):
        A.dot_attention_forward(q, keys, values)
    with pytest.raises(TypeError, match="scale"):
        A.dot_attention_forward(q, q, values[:, :2], scale="big")
    with pytest.raises(ValueError, match=r"W_a: expected shape \(Hq, Hk\)"):
        A.general_attention_forward(q, keys, values, W_q)
    ctx, w, cache = f(*args, **kw)
    with pytest.raises(ValueError, match=r"dcontext: expected shape \(B, T, Hv\)"):
        A.additive_attention_backward(ctx[:, :1], None, cache)
    with pytest.raises(ValueError, match="from additive_attention_forward"):
        A.dot_attention_backward(ctx, None, cache)
    with pytest.raises(ValueError, match="training=True"):
        A.additive_attention_backward(ctx, None, f(*args, **kw, training=False)[2])
    # the private kernels check the sizes they rely on
    with pytest.raises(ValueError, match="kp: wrong shape"):
        _core.attention_additive_forward(
            np.zeros((2, 1, 4)), np.zeros((2, 3, 5)), np.zeros(4), np.zeros((2, 3, 2)), None
        )
    with pytest.raises(ValueError, match="mask: wrong shape"):
        _core.attention_dot_forward(
            np.zeros((2, 1, 4)), np.zeros((2, 3, 4)), np.zeros((2, 3, 2)), np.ones((2, 2), np.uint8), 1.0
        )
    with pytest.raises(ValueError, match="w: wrong shape"):
        _core.attention_dot_backward(
            None,
            None,
            np.zeros((2, 1, 4)),
            np.zeros((2, 3, 4)),
            np.zeros((2, 3, 2)),
            np.zeros((2, 1, 2)),
            None,
            1.0,
        )


def test_additive_key_bias_forward_and_gradients(rng):
    """``key_bias=True``: e_tj = v . tanh(W_q q_t + b + W_k k_j + b_k) (the torch tutorial's two
    biased nn.Linear layers); exact gradients of every parameter, the biases included."""
    add = A.AdditiveAttention(Hq, Hk, AS, bias=True, key_bias=True, dtype=np.float64, seed=3)
    assert [n for n, _ in add.named_parameters()] == [
        "v",
        "query.weight",
        "query.bias",
        "key.weight",
        "key.bias",
    ]
    q = rng.standard_normal((B, 2, Hq))
    keys = rng.standard_normal((B, S, Hk))
    add.train()
    ctx, w = add(q, keys)
    p = {n: x.data for n, x in add.named_parameters()}
    qp = q @ p["query.weight"].T + p["query.bias"]
    kp = keys @ p["key.weight"].T + p["key.bias"]
    e = np.tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ p["v"]  # (B, T, S)
    want = np.exp(e - e.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(w, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ctx, want @ keys, rtol=1e-12, atol=1e-13)
    dctx = rng.standard_normal(ctx.shape)
    add.zero_grad()
    add(q, keys)
    add.backward(dctx)
    for name, prm in add.named_parameters():
        num = finite_difference(lambda: float((add(q, keys)[0] * dctx).sum()), prm.data)
        np.testing.assert_allclose(prm.grad, num, rtol=1e-6, atol=1e-8, err_msg=name)
