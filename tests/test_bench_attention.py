"""The attention benchmark compares like with like: every implementation it times computes the same attention
(outputs and gradients), and its layout conversions are inverse to each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfip_jax.bench import attention


def test_layout_round_trip_and_native_layout():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 6))  # [B, N, H, n, d]
    native = attention._to_native(x)
    assert native.shape == (6, 5, 4, 6)  # [B·N, n, H, d]
    np.testing.assert_array_equal(native[4, :, 1], x[1, 1, 1])  # dataset 1, node 1, head 1
    np.testing.assert_array_equal(attention._from_native(native, 3), x)


def test_every_implementation_matches_ours_forward_and_backward():
    rows = attention.measure((1, 3, 2, 24, 8), jnp.float32, reps=1)
    assert [r["impl"] for r in rows] == list(attention.IMPLEMENTATIONS)
    for row in rows:
        assert row["max_abs_diff"] < 1e-5, row
    # the gap is measured, not assumed: a wrong scale shows up
    wrong = jax.jit(lambda q, k, v: attention._einsum_attention(2 * q, k, v))
    q, k, v, _ = attention.inputs("ours", jax.random.key(0), (1, 3, 2, 24, 8), jnp.float32)
    ours = attention.kernel("ours")(q, k, v)
    assert float(jnp.max(jnp.abs(wrong(q, k, v) - ours))) > 1e-2


def test_bad_arguments_are_refused_in_one_line(capsys):
    for argv in (["--heads", "6x"], ["--heads", "0x16"], ["--dtypes", "float16"], ["--reps", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            attention.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("python -m cfip_jax.bench.attention: error:"), err
