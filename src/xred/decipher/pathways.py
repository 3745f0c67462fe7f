"""Attack pathways (Das et al., "Bluff: Interactively Deciphering Adversarial Attacks on Deep
Neural Networks", IEEE VIS 2020): which channels an attack suppresses, excites and exploits to
push images of a benign class toward a target class.

For each chosen layer and channel k:

- importance for class c: I_c[k] = median over the class's images of max_p A_k(p) (the channel's
  maximum activation);
- percentile within the layer: pct_c[k] = 100 · #{l : I_c[l] < I_c[k]} / (C − 1) (0 = the least
  important channel, 100 = the most; ties share the lower rank);
- for the benign images attacked at strengths ε_1 < … < ε_S: the same on the attacked images,
  pct_s[k]; its change Δ_s[k] = pct_s[k] − pct_0[k] with pct_0 the benign percentile; and the
  vulnerability V[k] = Σ_s |pct_s[k] − pct_0[k]| / ε_s;
- its role, from Δ at the strongest attack (Δ_S) and the dominance threshold q (percentile):
  ``suppressed_benign`` (pct_benign ≥ q and Δ_S ≤ −δ), ``excited_target`` (pct_target ≥ q and
  Δ_S ≥ δ), ``exploited`` (important to neither class: pct_benign < q and pct_target < q, but
  pct_S ≥ q and Δ_S ≥ δ: the attack drives it), ``unchanged`` (|Δ_S| < δ), ``other`` (changed by
  at least δ but none of the above).

The graph keeps, per layer, the ``top_k`` channels of each ranking (benign importance, target
importance, attacked importance at the strongest attack, vulnerability), and between consecutive
layers the ``top_edges`` strongest edges among them (:mod:`xred.decipher.edges`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xred.decipher.activations import default_layers, layer_maxima
from xred.decipher.edges import EDGE_METHODS, PairSpec, connecting_convs, edge_weights
from xred.errors import XredError

ROLES = ("suppressed_benign", "excited_target", "exploited", "unchanged", "other")
#: roles that say the attack uses the channel (what the ablation zeroes)
DRIVING = ("excited_target", "exploited")
SCHEMA_ID = "xred.decipher.pathways"
SCHEMA_VERSION = 1


# ------------------------------------------------------------------ the statistics (pure)


def importance(maxima: Tensor) -> Tensor:
    """(C,) median over the images of each channel's maximum activation, from (N, C) maxima
    (the interpolating median: the mean of the two middle values for even N)."""
    if maxima.shape[0] == 0:
        raise XredError("no images to compute channel importance from")
    return maxima.double().quantile(0.5, dim=0)


def percentile(values: Tensor) -> Tensor:
    """Percentile of each entry of ``values`` (..., C) within its row: 100 · (number of strictly
    smaller entries) / (C − 1)."""
    c = values.shape[-1]
    below = (values.unsqueeze(-2) < values.unsqueeze(-1)).sum(-1)
    return below.double() * 100 / max(c - 1, 1)


def vulnerability(pct_attacked: Tensor, pct_benign: Tensor, eps: Tensor) -> Tensor:
    """(C,) Σ_s |pct_s − pct_0| / ε_s from (S, C) attacked percentiles, (C,) benign ones and the
    (S,) strengths."""
    return ((pct_attacked - pct_benign).abs() / eps.double()[:, None]).sum(0)


def roles(pct_benign: Tensor, pct_target: Tensor, pct_strongest: Tensor, *,
          dominant: float = 80.0, change: float = 10.0) -> list[str]:
    """Each channel's role (see the module docstring) from its benign, target and strongest-
    attack percentiles, the dominance threshold ``dominant`` and the change threshold
    ``change`` (δ, percentile points)."""
    delta = pct_strongest - pct_benign
    dom_b, dom_t = pct_benign >= dominant, pct_target >= dominant
    code = torch.full(delta.shape, 4, dtype=torch.long)
    code[delta.abs() < change] = 3
    code[~dom_b & ~dom_t & (pct_strongest >= dominant) & (delta >= change)] = 2
    code[dom_t & (delta >= change)] = 1
    code[dom_b & (delta <= -change)] = 0
    return [ROLES[i] for i in code.tolist()]


# ------------------------------------------------------------------ results


@dataclass
class LayerPathway:
    """The statistics of one layer (tensors over its C channels; attacked ones (S, C))."""

    name: str
    channels: int
    importance_benign: Tensor
    importance_target: Tensor
    importance_attacked: Tensor
    pct_benign: Tensor
    pct_target: Tensor
    pct_attacked: Tensor
    vulnerability: Tensor
    roles: list[str]

    @property
    def change(self) -> Tensor:
        """(S, C) Δ_s = pct_s − pct_benign."""
        return self.pct_attacked - self.pct_benign

    def top_channels(self, k: int) -> list[int]:
        """The union of the top ``k`` channels by benign, target and strongest-attack importance
        and by vulnerability, in ascending channel order."""
        keys = [self.importance_benign, self.importance_target, self.importance_attacked[-1],
                self.vulnerability]
        k = min(k, self.channels)
        chosen: set[int] = set()
        for key in keys:
            chosen.update(key.topk(k).indices.tolist())
        return sorted(chosen)


@dataclass
class Edge:
    source: tuple[str, int]
    target: tuple[str, int]
    method: str
    weights: dict[str, Any]


@dataclass
class Pathways:
    """Bluff's statistics for one (model, benign class, target class, attack) and the graph."""

    model: str
    classes: list[str]
    benign: int
    target: int
    attack: dict[str, Any]
    eps: list[float]
    success_rate: list[float]
    n_benign: int
    n_target: int
    layers: list[LayerPathway]
    nodes: dict[str, list[int]]
    edges: list[Edge]
    edge_methods: list[dict[str, Any]]
    parameters: dict[str, Any]
    examples: dict[str, dict[int, Any]] = field(default_factory=dict)

    def layer(self, name: str) -> LayerPathway:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise XredError(f"no layer {name!r} in these pathways; layers: "
                        f"{', '.join(lp.name for lp in self.layers)}")

    def driving_channels(self, k: int = 5) -> list[tuple[str, int]]:
        """The ``k`` graph channels labelled as driving the attack (``excited_target`` or
        ``exploited``), largest change at the strongest attack first (ties: vulnerability)."""
        found = []
        for lp in self.layers:
            change = lp.change[-1]
            for c in self.nodes[lp.name]:
                if lp.roles[c] in DRIVING:
                    found.append((float(change[c]), float(lp.vulnerability[c]), lp.name, c))
        found.sort(key=lambda t: (-t[0], -t[1]))
        return [(name, c) for _, _, name, c in found[:k]]

    def to_graph(self) -> dict[str, Any]:
        """The graph document (see :data:`xred.decipher.schema.SCHEMA`): JSON-ready."""
        name = self.classes.__getitem__

        def num(t: Tensor | float) -> float:
            v = float(t)
            return round(v, 6) if math.isfinite(v) else 0.0

        nodes = []
        for li, lp in enumerate(self.layers):
            for c in self.nodes[lp.name]:
                node: dict[str, Any] = {
                    "id": f"{lp.name}:{c}", "layer": lp.name, "layer_index": li, "channel": c,
                    "role": lp.roles[c],
                    "importance": {"benign": num(lp.importance_benign[c]),
                                   "target": num(lp.importance_target[c]),
                                   "attacked": [num(v) for v in lp.importance_attacked[:, c]]},
                    "percentile": {"benign": num(lp.pct_benign[c]),
                                   "target": num(lp.pct_target[c]),
                                   "attacked": [num(v) for v in lp.pct_attacked[:, c]]},
                    "change": [num(v) for v in lp.change[:, c]],
                    "vulnerability": num(lp.vulnerability[c])}
                if lp.name in self.examples and c in self.examples[lp.name]:
                    node["examples"] = self.examples[lp.name][c]
                nodes.append(node)
        edges = [{"source": f"{e.source[0]}:{e.source[1]}", "target": f"{e.target[0]}:"
                  f"{e.target[1]}", "method": e.method, "weight": e.weights} for e in self.edges]
        return {
            "schema": SCHEMA_ID, "version": SCHEMA_VERSION, "model": self.model,
            "classes": list(self.classes),
            "benign": {"index": self.benign, "name": name(self.benign), "images": self.n_benign},
            "target": {"index": self.target, "name": name(self.target), "images": self.n_target},
            "attack": {**self.attack, "eps": list(self.eps),
                       "success_rate": [num(v) for v in self.success_rate]},
            "parameters": dict(self.parameters),
            "layers": [{"name": lp.name, "index": i, "channels": lp.channels,
                        "shown": list(self.nodes[lp.name]),
                        "role_counts": {r: lp.roles.count(r) for r in ROLES}}
                       for i, lp in enumerate(self.layers)],
            "edge_methods": list(self.edge_methods),
            "nodes": nodes, "edges": edges}

    def summary(self) -> dict[str, Any]:
        """Small numbers for metrics.json: per layer the role counts, the driving channels."""
        return {"model": self.model, "benign": self.classes[self.benign],
                "target": self.classes[self.target], "eps": self.eps,
                "success_rate": self.success_rate,
                "roles": {lp.name: {r: lp.roles.count(r) for r in ROLES} for lp in self.layers},
                "driving": [f"{n}:{c}" for n, c in self.driving_channels(5)],
                "edge_methods": self.edge_methods}


# ------------------------------------------------------------------ checks


def class_index(value: str | int, classes: list[str], what: str = "class") -> int:
    """A class given by index or name; a one-line error listing the classes otherwise."""
    shown = ", ".join(f"{i}={c}" for i, c in enumerate(classes))
    if isinstance(value, bool):
        raise XredError(f"{what} {value!r} is not a class; classes: {shown}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        i = int(value)
        if 0 <= i < len(classes):
            return i
        raise XredError(f"{what} {i} does not exist; classes: {shown}")
    if isinstance(value, str):
        folded = {c.lower(): i for i, c in enumerate(classes)}
        if value in classes:
            return classes.index(value)
        if value.lower() in folded:
            return folded[value.lower()]
    raise XredError(f"{what} {value!r} does not exist; classes: {shown}")


def check_pair(benign: int, target: int, classes: list[str]) -> None:
    if benign == target:
        raise XredError(f"the target class equals the benign class ({classes[benign]}); choose "
                        "another target class")


def check_eps(eps: list[float]) -> list[float]:
    """The ε grid: positive, finite and strictly increasing."""
    try:
        values = [float(e) for e in eps]
    except (TypeError, ValueError) as e:
        raise XredError(f"the ε grid must be numbers, got {eps!r}") from e
    if not values:
        raise XredError("the ε grid is empty; pass at least one strength, e.g. 0.01 0.02 0.05")
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise XredError(f"every ε must be a positive number, got {values}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise XredError(f"the ε grid must be strictly increasing, got {values}; sort it, e.g. "
                        f"{sorted(set(values))}")
    return values


# ------------------------------------------------------------------ computing


def layer_statistics(name: str, benign: Tensor, target: Tensor, attacked: list[Tensor],
                     eps: list[float], *, dominant: float, change: float) -> LayerPathway:
    """One layer's statistics from the (N, C) channel maxima of the benign images, the target
    images and the attacked benign images at each ε."""
    ib, it = importance(benign), importance(target)
    ia = torch.stack([importance(a) for a in attacked])
    pb, pt, pa = percentile(ib), percentile(it), percentile(ia)
    vul = vulnerability(pa, pb, torch.tensor(eps, dtype=torch.float64))
    return LayerPathway(name, ib.shape[0], ib, it, ia, pb, pt, pa, vul,
                        roles(pb, pt, pa[-1], dominant=dominant, change=change))


def pathways_from_inputs(model: nn.Module, benign_x: Tensor, target_x: Tensor,
                         attacked_x: list[Tensor], eps: list[float], *, benign: int, target: int,
                         classes: list[str] | None = None, layers: list[str] | None = None,
                         edges: str = "auto", top_k: int = 8, top_edges: int = 24,
                         dominant: float = 80.0, change: float = 10.0, batch_size: int = 500,
                         success_rate: list[float] | None = None,
                         attack: dict[str, Any] | None = None, model_name: str = "model",
                         progress: Callable[[float, str], None] | None = None) -> Pathways:
    """Bluff's statistics and graph from given inputs: ``attacked_x[s]`` are the benign images
    attacked at strength ``eps[s]`` (same order as ``benign_x``)."""
    eps = check_eps(eps)
    if len(attacked_x) != len(eps):
        raise XredError(f"{len(attacked_x)} attacked batches for {len(eps)} strengths; pass one "
                        "per ε")
    if edges not in EDGE_METHODS:
        raise XredError(f"unknown edge method {edges!r}; valid: {', '.join(EDGE_METHODS)}")
    if benign_x.shape[0] == 0 or target_x.shape[0] == 0:
        raise XredError("no images of the benign or the target class; pass at least one each")
    layers = list(layers) if layers else default_layers(model, benign_x)
    if len(set(layers)) != len(layers):
        raise XredError(f"a layer is given twice: {layers}")
    with torch.no_grad():
        logits = model(benign_x[:1])
    num_classes = logits.shape[1]
    classes = list(classes) if classes else [str(i) for i in range(num_classes)]
    for c in (benign, target):
        class_index(c, classes)
    check_pair(benign, target, classes)

    def tell(f: float, msg: str) -> None:
        if progress:
            progress(f, msg)

    tell(0.0, "channel activations")
    mb, _ = layer_maxima(model, benign_x, layers, batch_size=batch_size)
    mt, _ = layer_maxima(model, target_x, layers, batch_size=batch_size)
    ma, preds = [], []
    for a in attacked_x:
        m, lg = layer_maxima(model, a, layers, batch_size=batch_size)
        ma.append(m)
        preds.append(lg.argmax(1))
    if success_rate is None:
        success_rate = [float((p == target).double().mean()) for p in preds]
    stats = [layer_statistics(n, mb[n], mt[n], [m[n] for m in ma], eps, dominant=dominant,
                              change=change) for n in layers]
    nodes = {lp.name: lp.top_channels(top_k) for lp in stats}

    tell(0.5, "edges")
    convs = connecting_convs(model, benign_x, layers) if edges != "gradient" else \
        [None] * (len(layers) - 1)
    specs, methods = [], []
    for p, (lower, upper) in enumerate(zip(layers, layers[1:], strict=False)):
        method = "bluff" if (edges == "bluff" or (edges == "auto" and convs[p])) else "gradient"
        if method == "bluff" and convs[p] is None:
            raise XredError(f"no single convolution connects {lower!r} to {upper!r}; use "
                            "edges='gradient' or 'auto'")
        methods.append({"lower": lower, "upper": upper, "method": method,
                        "conv": convs[p] if method == "bluff" else None})
        specs.append(PairSpec(lower, upper, method, convs[p] if method == "bluff" else None,
                              torch.tensor(nodes[lower], dtype=torch.long),
                              torch.tensor(nodes[upper], dtype=torch.long)))
    sets = [benign_x, target_x, *attacked_x]
    per_set = []
    for s, xs in enumerate(sets):
        per_set.append(edge_weights(model, xs, specs, batch_size=batch_size))
        tell(0.5 + 0.5 * (s + 1) / len(sets), "edges")
    edge_list: list[Edge] = []
    for p, spec in enumerate(specs):
        wb, wt = per_set[0][p], per_set[1][p]
        wa = torch.stack([w[p] for w in per_set[2:]])                          # (S, I, J)
        strength = torch.stack([wb.abs(), wt.abs(), wa.abs().amax(0)]).amax(0)  # (I, J)
        order = strength.flatten().argsort(descending=True)[:top_edges]
        for flat in order.tolist():
            i, j = divmod(flat, len(spec.targets))
            edge_list.append(Edge(
                (spec.lower, int(spec.sources[i])), (spec.upper, int(spec.targets[j])),
                spec.method, {"benign": round(float(wb[i, j]), 6),
                              "target": round(float(wt[i, j]), 6),
                              "attacked": [round(float(w), 6) for w in wa[:, i, j]]}))
    return Pathways(
        model=model_name, classes=classes, benign=benign, target=target,
        attack={"targeted": True, **(attack or {"name": "given"})}, eps=eps,
        success_rate=[float(s) for s in success_rate], n_benign=int(benign_x.shape[0]),
        n_target=int(target_x.shape[0]), layers=stats, nodes=nodes, edges=edge_list,
        edge_methods=methods,
        parameters={"top_k": top_k, "top_edges": top_edges, "dominant_percentile": dominant,
                    "change_threshold": change, "role_strength": "strongest ε of the grid",
                    "importance": "median over images of the channel's maximum activation",
                    "percentile": "100 · #channels with lower importance / (C − 1)",
                    "vulnerability": "Σ_s |pct_s − pct_benign| / ε_s"})


def run_attack(model: nn.Module, x: Tensor, target: int, eps: float, *, attack: str = "pgd",
               options: dict[str, Any] | None = None, seed: int = 0, batch_size: int = 500
               ) -> tuple[Tensor, Tensor]:
    """(adversarial inputs, success) of the targeted input attack ``attack`` (from
    :mod:`xred.attacks.input`) toward ``target`` at radius ``eps``, in batches."""
    from xred.attacks.input import get

    made = get(attack, model, **{**(options or {}), "eps": eps, "seed": seed})
    xs, ok = [], []
    for start in range(0, x.shape[0], batch_size):
        part = x[start:start + batch_size]
        out = made(part, None, target=torch.full((part.shape[0],), target, dtype=torch.long,
                                                  device=x.device))
        xs.append(out.x_adv)
        ok.append(out.success)
    return torch.cat(xs), torch.cat(ok)


def attack_pathways(model: nn.Module, benign_x: Tensor, target_x: Tensor, eps: list[float], *,
                    benign: int | str, target: int | str, classes: list[str] | None = None,
                    attack: str = "pgd", attack_options: dict[str, Any] | None = None,
                    seed: int = 0, batch_size: int = 500, model_name: str = "model",
                    progress: Callable[[float, str], None] | None = None,
                    **kwargs: Any) -> tuple[Pathways, list[Tensor]]:
    """Attack ``benign_x`` (images of class ``benign``) toward ``target`` with the input attack
    ``attack`` at every ε of the grid, then :func:`pathways_from_inputs`. Returns the pathways
    and the adversarial batches (one per ε)."""
    eps = check_eps(eps)
    with torch.no_grad():
        num_classes = model(benign_x[:1]).shape[1]
    classes = list(classes) if classes else [str(i) for i in range(num_classes)]
    b, t = class_index(benign, classes, "benign class"), class_index(target, classes,
                                                                       "target class")
    check_pair(b, t, classes)
    if kwargs.get("layers"):
        from xred.decipher.activations import modules_by_name

        modules_by_name(model, list(kwargs["layers"]))
    adversarial, rates = [], []
    for s, e in enumerate(eps):
        if progress:
            progress(0.6 * s / len(eps), f"{attack} ε={e:g}")
        x_adv, ok = run_attack(model, benign_x, t, e, attack=attack, options=attack_options,
                               seed=seed, batch_size=batch_size)
        adversarial.append(x_adv)
        rates.append(float(ok.double().mean()))

    def rest(f: float, msg: str) -> None:
        if progress:
            progress(0.6 + 0.4 * f, msg)

    info = {"name": attack, "targeted": True, "options": dict(attack_options or {}),
            "seed": seed}
    result = pathways_from_inputs(model, benign_x, target_x, adversarial, eps, benign=b,
                                  target=t, classes=classes, success_rate=rates, attack=info,
                                  batch_size=batch_size, model_name=model_name, progress=rest,
                                  **kwargs)
    return result, adversarial


def compare(a: dict[str, Any], b: dict[str, Any], *, strength: int = -1) -> dict[str, Any]:
    """Two graph documents of the same model and class pair (two strengths or two attack
    methods) side by side, at ``attack.eps[strength]`` of each: per layer shared by both, the
    channels shown in both, how many of them changed role, the Pearson correlation of their
    percentile changes, and the overlap of the channels each labels as driving the attack."""
    if (a["model"], a["benign"]["index"], a["target"]["index"]) != \
            (b["model"], b["benign"]["index"], b["target"]["index"]):
        raise XredError("compare needs two graphs of the same model and class pair")
    nodes_a = {n["id"]: n for n in a["nodes"]}
    nodes_b = {n["id"]: n for n in b["nodes"]}
    layers = [lay["name"] for lay in a["layers"] if lay["name"] in
              {x["name"] for x in b["layers"]}]
    out: dict[str, Any] = {"layers": {}}
    for name in layers:
        shared = sorted(i for i in nodes_a if i in nodes_b and nodes_a[i]["layer"] == name)
        ca = torch.tensor([nodes_a[i]["change"][strength] for i in shared], dtype=torch.float64)
        cb = torch.tensor([nodes_b[i]["change"][strength] for i in shared], dtype=torch.float64)
        corr = None
        if len(shared) > 1 and float(ca.std()) > 0 and float(cb.std()) > 0:
            corr = float(torch.corrcoef(torch.stack([ca, cb]))[0, 1])
        out["layers"][name] = {
            "shared": len(shared),
            "role_changed": [i for i in shared if nodes_a[i]["role"] != nodes_b[i]["role"]],
            "change_correlation": corr}
    drive_a = {i for i, n in nodes_a.items() if n["role"] in DRIVING}
    drive_b = {i for i, n in nodes_b.items() if n["role"] in DRIVING}
    union = drive_a | drive_b
    out["driving"] = {"a_only": sorted(drive_a - drive_b), "b_only": sorted(drive_b - drive_a),
                      "both": sorted(drive_a & drive_b),
                      "jaccard": len(drive_a & drive_b) / len(union) if union else None}
    return out
