"""The roofline's FLOP count read from compiled HLO: exact for known matrix products, forward and backward, and
the classes it charges operations to."""

import jax
import jax.numpy as jnp

from cfip_jax.bench import roofline


def _flops(fn, *args) -> float:
    return sum(roofline.hlo_dot_flops(jax.jit(fn).lower(*args).compile().as_text()).values())


def test_a_batched_dot_costs_two_flops_per_multiply_add():
    q, k = jnp.ones((3, 5, 7, 16)), jnp.ones((3, 5, 11, 16))
    scores = lambda a, b: jnp.einsum("bhqd,bhkd->bhqk", a, b)  # noqa: E731
    assert _flops(scores, q, k) == 2 * 3 * 5 * 7 * 11 * 16


def test_a_two_layer_mlp_and_its_gradient_cost_their_matrix_products():
    x, w1, w2 = (jax.random.normal(jax.random.key(i), s) for i, s in enumerate([(64, 24), (24, 40), (40, 24)]))
    one = 2 * 64 * 24 * 40  # each of the five products below has this many multiply-adds × 2

    def loss(w1, w2, x):
        return jnp.sum((jax.nn.relu(x @ w1) @ w2) ** 2)

    assert _flops(loss, w1, w2, x) == 2 * one  # x·w1, h·w2
    assert _flops(jax.grad(loss, argnums=(0, 1)), w1, w2, x) == 5 * one  # and hᵀ·g, g·w2ᵀ, xᵀ·dh (no dx)


def test_classes_follow_the_op_names():
    cases = {
        "jit(step)/jvp(encoder)/sample_attention/dot_general": ("sample attention", "forward"),
        "jit(step)/transpose(jvp(encoder))/layer_0/query/dot_general": ("projections", "backward"),
        "jit(step)/jvp(encoder)/layer_0/mul": ("norms and elementwise", "forward"),
        "jit(step)/adam/mul": ("optimiser/EMA", ""),
    }
    for op_name, expected in cases.items():
        assert roofline.classify(op_name, 0.0 if op_name.endswith("mul") else 10.0) == expected, op_name


def test_overlapping_operations_share_the_wall_time_and_a_loop_is_charged_outside_its_body():
    from cfip_jax.bench.train import exclusive_durations

    events = [
        ("a", 0.0, 10.0, 1),  # alone for 5 µs, then alongside b for 5
        ("b", 5.0, 10.0, 2),  # alongside a for 5, then alone for 5
        ("loop", 20.0, 10.0, 1),  # contains body1 and body2 on its own thread
        ("body1", 22.0, 3.0, 1),
        ("body2", 26.0, 2.0, 1),
        ("c", 40.0, 4.0, 1),  # three at once over [40, 42): each 2/3
        ("d", 40.0, 2.0, 2),
        ("e", 40.0, 2.0, 3),
    ]
    charged = dict(exclusive_durations(events))
    expected = dict(a=7.5, b=7.5, loop=5.0, body1=3.0, body2=2.0, c=2.0 + 2.0 / 3.0, d=2.0 / 3.0, e=2.0 / 3.0)
    assert charged.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(charged[name] - value) < 1e-9, (name, charged[name], value)
    assert abs(sum(charged.values()) - (15.0 + 10.0 + 4.0)) < 1e-9  # the union of the busy intervals
