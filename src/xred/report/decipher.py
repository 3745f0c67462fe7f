"""Figures of :mod:`xred.decipher`: the attack-pathway graph (Bluff) and channel example patches.
Pure rendering from the graph document (``Pathways.to_graph()``) and tensors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from xred.io import atomic_write

ROLE_COLOURS = {"suppressed_benign": "#2ca02c", "excited_target": "#1f77b4",
                "exploited": "#d62728", "unchanged": "#bbbbbb", "other": "#ff7f0e"}
ROLE_LABELS = {"suppressed_benign": "dominant for benign, suppressed",
               "excited_target": "dominant for target, excited",
               "exploited": "exploited by the attack", "unchanged": "unchanged",
               "other": "changed, other"}


def pathway_figure(graph: dict[str, Any], path: str | os.PathLike, *, strength: int = -1,
                   max_nodes: int = 14) -> Path:
    """Layers as columns, the graph's channels as nodes coloured by role (size: vulnerability),
    edges coloured by their weight on the attacked images at ``attack.eps[strength]``. Per
    layer, the ``max_nodes`` channels with the largest |change| are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    layers = graph["layers"]
    eps = graph["attack"]["eps"]
    s = strength % len(eps)
    by_layer: dict[str, list[dict[str, Any]]] = {lay["name"]: [] for lay in layers}
    for node in graph["nodes"]:
        by_layer[node["layer"]].append(node)
    pos: dict[str, tuple[float, float]] = {}
    for li, lay in enumerate(layers):
        nodes = sorted(by_layer[lay["name"]], key=lambda n: -abs(n["change"][s]))[:max_nodes]
        nodes.sort(key=lambda n: -n["change"][s])
        for k, node in enumerate(nodes):
            pos[node["id"]] = (li, (len(nodes) - 1) / 2 - k)
    fig, ax = plt.subplots(figsize=(2.2 * len(layers) + 2.5, 0.42 * max_nodes + 2.2))
    edges = [e for e in graph["edges"] if e["source"] in pos and e["target"] in pos]
    weights = [e["weight"]["attacked"][s] for e in edges]
    top = max((abs(w) for w in weights), default=1.0) or 1.0
    cmap = plt.cm.coolwarm
    norm = matplotlib.colors.Normalize(-top, top)
    for e, w in sorted(zip(edges, weights, strict=True), key=lambda t: abs(t[1])):
        (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
        ax.plot([x0, x1], [y0, y1], color=cmap(norm(w)), lw=0.4 + 2.6 * abs(w) / top,
                alpha=0.35 + 0.6 * abs(w) / top, zorder=1)
    vmax = max((n["vulnerability"] for n in graph["nodes"]), default=1.0) or 1.0
    for node in graph["nodes"]:
        if node["id"] not in pos:
            continue
        x, y = pos[node["id"]]
        ax.scatter([x], [y], s=60 + 240 * node["vulnerability"] / vmax,
                   color=ROLE_COLOURS[node["role"]], edgecolor="black", lw=0.5, zorder=2)
        ax.text(x + 0.09, y, f"{node['channel']} ({node['change'][s]:+.0f})", fontsize=6,
                va="center", zorder=3)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([lay["name"] for lay in layers], fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(layers) - 0.3)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    handles = [Line2D([], [], marker="o", ls="", color=c, markeredgecolor="black",
                      label=ROLE_LABELS[r]) for r, c in ROLE_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.45,
                       location="bottom", pad=0.12)
    method = ", ".join(sorted({m["method"] for m in graph["edge_methods"]})) or "-"
    bar.set_label(f"edge weight on the attacked images ({method} influence)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    a = graph["attack"]
    ax.set_title(f"{graph['model']}: {graph['benign']['name']} → {graph['target']['name']}, "
                 f"{a['name']} ε = {eps[s]:g} (success {100 * a['success_rate'][s]:.0f} %)",
                 fontsize=9)
    fig.text(0.01, 0.01, "Nodes: channels (label: channel (percentile change)), size: "
             "vulnerability Σ|Δpct|/ε; top: most excited.", fontsize=6)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png",
                                                     bbox_inches="tight"))
    plt.close(fig)
    return out


def patches_figure(patches: dict[str, Tensor], path: str | os.PathLike, *,
                   title: str, roles: dict[str, str] | None = None) -> Path:
    """One row per channel (``patches[node_id]``: (K, C, h, w) in [0, 1]): the training-set
    patches that activate it most, the strongest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(patches)
    k = max((p.shape[0] for p in patches.values()), default=1)
    fig, axes = plt.subplots(max(len(names), 1), k, figsize=(1.1 * k + 1.6,
                                                             1.1 * max(len(names), 1) + 0.6),
                             squeeze=False)
    for r, name in enumerate(names):
        for c in range(k):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < patches[name].shape[0]:
                img = patches[name][c].detach().float().cpu()
                img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
                ax.imshow(img.clamp(0, 1).numpy(), cmap="gray" if img.dim() == 2 else None,
                          vmin=0, vmax=1)
            if c == 0:
                label = name + (f"\n{roles[name]}" if roles and name in roles else "")
                ax.set_ylabel(label, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.text(0.01, 0.005, "Grey scale: pixel value 0 (black) to 1 (white). Windows centred on the "
             "strongest activation, approximate receptive field.", fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out



def recovery_figure(recovery: dict[str, dict[str, Any]], fractions: list[float],
                    path: str | os.PathLike, *, names: dict[str, str] | None = None,
                    fill: str = "clean") -> Path:
    """Gu & Tresp's Fig. 4: one panel per (model, attack), the accuracy regained on the
    successful adversarial examples against the share r of pixels reset (``fill``), one line per
    explainer and the random ranking dashed. ``recovery[model][attack]`` is an entry of
    :func:`xred.decipher.explaining.explain_adversarial` (``methods``, ``random``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or {}
    models = list(recovery)
    attacks = sorted({a for per in recovery.values() for a in per},
                     key=lambda a: next(list(p).index(a) for p in recovery.values() if a in p))
    r = [100 * f for f in fractions]
    fig, axes = plt.subplots(len(models), len(attacks), squeeze=False,
                             figsize=(3.0 * len(attacks) + 1.8, 2.3 * len(models) + 0.8),
                             sharex=True)

    methods = list(dict.fromkeys(m for per in recovery.values() for e in per.values()
                                 for m in e["methods"]))
    palette = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    colour = {m: palette(k) for k, m in enumerate(methods)}  # one colour per explainer

    def points(curve: list[float | None]) -> list[float]:
        return [float("nan") if v is None else 100 * v for v in curve]

    for i, model in enumerate(models):
        for j, attack in enumerate(attacks):
            ax = axes[i][j]
            entry = recovery[model].get(attack)
            if entry is None:
                ax.set_axis_off()
                continue
            for m, v in entry["methods"].items():
                ax.plot(r, points(v["recovery"][fill]["successful"]), marker="o", ms=2.5,
                        lw=1.2, color=colour[m], label=names.get(m, m))
            ax.plot(r, points(entry["random"][fill]["successful"]), "k--", lw=1.2,
                    label="random ranking")
            ax.set_title(f"{model}, {attack} ({entry['n_successful']} successful)", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel("accuracy regained (%)", fontsize=7)
            if i == len(models) - 1:
                ax.set_xlabel("pixels reset to the clean value (r, %)", fontsize=7)
    legend: dict[str, Any] = {}  # every explainer of every panel (the photos may have more)
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="center right", fontsize=7)
    fig.suptitle("Recovery curves (Gu & Tresp Fig. 4): reset the top-r % pixels of each "
                 "explainer's map of the adversarial input", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.84, 0.96))
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out
