"""Priors over structural causal models: frozen, hashable descriptions (usable as static jit arguments).

The two named settings of the reference (SPEC.md §1–§3), ``"in"`` (training distribution, P_IN) and ``"out"``
(out-of-distribution tests, P_OUT), live in :data:`SETTINGS` and are assembled by :func:`scm_prior`; no prior number is
written anywhere else in the package.

Every dataclass validates itself on construction and raises a one-line ``ValueError`` naming the bad field.
Tuples of hyper-parameters are choice lists: one entry is drawn uniformly for every graph, as in the reference.
"""

from __future__ import annotations

import dataclasses

from cfip_jax import validation as V

GRAPH_FAMILIES = ("er", "sf_in", "sf_out", "sbm", "ws", "grg")
FUNCTIONS = ("linear", "rff")
NOISES = ("gaussian", "laplace", "cauchy")
PRIOR_SETTINGS = ("in", "out")


def _choices(values, name: str, cast, minimum=None) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must list at least one value")
    out = []
    for v in values:
        v = cast(v)
        if minimum is not None and v < minimum:
            raise ValueError(f"{name} entries must be >= {minimum}, got {v}")
        out.append(v)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class GraphPrior:
    """A random-DAG family and its hyper-parameter choice lists (SPEC.md §1).

    Attributes:
      family: one of :data:`GRAPH_FAMILIES`.
      edges_per_node: ER k, SF m, SBM k.
      power: SF attachment power γ (target ∝ in-degree^γ + 1).
      num_blocks: SBM block counts K.
      damping: SBM inter-block damping δ.
      lattice_dim: WS lattice dimension L.
      rewire_prob: WS rewiring probability.
      neighbors: WS lattice neighbourhood.
      radius: GRG connection radius.
    """

    family: str
    edges_per_node: tuple[int, ...] = (1, 2, 3)
    power: tuple[float, ...] = (1.0,)
    num_blocks: tuple[int, ...] = (5, 10)
    damping: tuple[float, ...] = (0.1,)
    lattice_dim: tuple[int, ...] = (2, 3)
    rewire_prob: tuple[float, ...] = (0.3,)
    neighbors: tuple[int, ...] = (1,)
    radius: tuple[float, ...] = (0.1,)

    def __post_init__(self):
        V.check_choice(self.family, GRAPH_FAMILIES, "graph family")
        set_ = lambda k, v: object.__setattr__(self, k, v)
        set_("edges_per_node", _choices(self.edges_per_node, "edges_per_node", int, 1))
        set_("power", _choices(self.power, "power", float, 0.0))
        set_("num_blocks", _choices(self.num_blocks, "num_blocks", int, 1))
        set_("damping", tuple(V.check_probability(p, "damping") for p in _choices(self.damping, "damping", float)))
        set_("lattice_dim", _choices(self.lattice_dim, "lattice_dim", int, 1))
        set_(
            "rewire_prob",
            tuple(V.check_probability(p, "rewire_prob") for p in _choices(self.rewire_prob, "rewire_prob", float)),
        )
        set_("neighbors", _choices(self.neighbors, "neighbors", int, 1))
        set_("radius", _choices(self.radius, "radius", float, 0.0))

    def check_nodes(self, d: int) -> int:
        """Validate a node count for this family (d ≥ 2; edges per node < d) and return it."""
        d = V.check_int(d, "d", minimum=2)
        if self.family in ("er", "sf_in", "sf_out", "sbm") and max(self.edges_per_node) >= d:
            raise ValueError(f"edges_per_node {max(self.edges_per_node)} must be < d = {d}")
        return d


@dataclasses.dataclass(frozen=True)
class MechanismPrior:
    """Mechanism family and its parameter ranges (SPEC.md §3).

    Attributes:
      func: ``"linear"`` or ``"rff"``.
      weight_range: linear weights ~ U±[low, high] (signed uniform).
      bias_range: bias ~ U[low, high] (both families).
      length_scale_range: RFF length scale ℓ_j ~ U[low, high].
      output_scale_range: RFF output scale s_j ~ U[low, high].
      num_features: RFF feature count M.
    """

    func: str
    weight_range: tuple[float, float] = (1.0, 3.0)
    bias_range: tuple[float, float] = (-3.0, 3.0)
    length_scale_range: tuple[float, float] = (7.0, 10.0)
    output_scale_range: tuple[float, float] = (10.0, 20.0)
    num_features: int = 100

    def __post_init__(self):
        V.check_choice(self.func, FUNCTIONS, "mechanism")
        set_ = lambda k, v: object.__setattr__(self, k, v)
        set_("weight_range", V.check_range(self.weight_range, "weight_range", positive=True))
        set_("bias_range", V.check_range(self.bias_range, "bias_range"))
        set_("length_scale_range", V.check_range(self.length_scale_range, "length_scale_range", positive=True))
        set_("output_scale_range", V.check_range(self.output_scale_range, "output_scale_range"))
        set_("num_features", V.check_int(self.num_features, "num_features", minimum=1))


@dataclasses.dataclass(frozen=True)
class NoisePrior:
    """Additive-noise law (SPEC.md §2).

    Attributes:
      kind: ``"gaussian"`` (scale = std), ``"laplace"`` (scale b, std √2·b) or ``"cauchy"`` (scale γ).
      scale_range: scale ~ U[low, high].
      shared_scale: one scale for all nodes of an SCM (the reference's linear-Gaussian case) instead of one per node.
    """

    kind: str
    scale_range: tuple[float, float] = (0.2, 2.0)
    shared_scale: bool = False

    def __post_init__(self):
        V.check_choice(self.kind, NOISES, "noise")
        object.__setattr__(self, "scale_range", V.check_range(self.scale_range, "scale_range", positive=True))
        object.__setattr__(self, "shared_scale", bool(self.shared_scale))


@dataclasses.dataclass(frozen=True)
class SCMPrior:
    """A full SCM prior: graph family, mechanism family and noise law."""

    graph: GraphPrior
    mechanism: MechanismPrior
    noise: NoisePrior

    @property
    def name(self) -> str:
        """``{graph}_{func}_{noise}`` as in the reference's directory names."""
        return f"{self.graph.family}_{self.mechanism.func}_{self.noise.kind}"


# The reference's two settings (SPEC.md §1.2, §3.1, §3.2; avici_data.py). Only the differences from the dataclass
# defaults (which are the in-distribution values) are listed. OUT: sf_out gets m = 2 and power {0.5, 1.5}; sf_in keeps
# the in-distribution law; noise ranges are unchanged (the OUT noise shift is the noise *type*).
SETTINGS: dict[str, dict] = {
    "in": {"graph": {}, "linear": {}, "rff": {}},
    "out": {
        "graph": {"sf_out": {"edges_per_node": (2,), "power": (0.5, 1.5)}},
        "linear": {"weight_range": (0.5, 4.0)},
        "rff": {"length_scale_range": (5.0, 12.0), "output_scale_range": (8.0, 22.0)},
    },
}

# Family-specific hyper-parameters that hold in both settings (SPEC.md §1.3: SBM uses 2 edges per node).
_FAMILY_DEFAULTS: dict[str, dict] = {"sbm": {"edges_per_node": (2,)}}


def scm_prior(graph: str, func: str, noise: str, prior: str = "in") -> SCMPrior:
    """The reference's SCM prior for one (graph, mechanism, noise, setting) combination.

    Args:
      graph: one of :data:`GRAPH_FAMILIES`.
      func: ``"linear"`` or ``"rff"``.
      noise: one of :data:`NOISES`.
      prior: ``"in"`` or ``"out"``.

    Returns:
      The :class:`SCMPrior`; linear + Gaussian gets one noise scale shared by all nodes of an SCM.
    """
    V.check_choice(prior, PRIOR_SETTINGS, "prior")
    V.check_choice(graph, GRAPH_FAMILIES, "graph family")
    V.check_choice(func, FUNCTIONS, "mechanism")
    V.check_choice(noise, NOISES, "noise")
    setting = SETTINGS[prior]
    graph_kwargs = {**_FAMILY_DEFAULTS.get(graph, {}), **setting["graph"].get(graph, {})}
    return SCMPrior(
        graph=GraphPrior(family=graph, **graph_kwargs),
        mechanism=MechanismPrior(func=func, **setting[func]),
        noise=NoisePrior(kind=noise, shared_scale=(func == "linear" and noise == "gaussian")),
    )
