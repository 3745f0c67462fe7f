"""Rendering of audits: the self-contained HTML report of ``xred audit`` (one file, figures
inlined as base64 PNG), its terminal summary, and the calibration figure of docs/audit.md."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from xred.io import atomic_write

__all__ = ["audit_html", "statistic_figure", "summary_lines"]

COLOURS = {"trustworthy": "#1a7f37", "suspicious": "#b35900", "manipulated": "#c62828",
           "fragile": "#b35900", "stable": "#1a7f37"}


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _maps_figure(x: Tensor, maps: dict[str, Tensor], title: str) -> str:
    """Inputs (first row) and each explainer's normalised maps over them, with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(x), 8)
    rows = [("input", None)] + list(maps.items())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.5 * n + 1, 1.5 * len(rows)), squeeze=False)
    image = None
    for r, (label, m) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            xi = x[c].float()
            if xi.dim() == 3:
                grey = xi.mean(0) if m is not None or xi.shape[0] == 1 else None
                if grey is None:
                    ax.imshow(xi.permute(1, 2, 0).clamp(0, 1).numpy())
                else:
                    ax.imshow(grey.numpy(), cmap="gray", vmin=0, vmax=1)
                if m is not None:
                    image = ax.imshow(m[c].float().numpy(), cmap="jet", alpha=0.55, vmin=0,
                                      vmax=1)
            elif m is not None:  # 1-D inputs: the map as a bar chart
                ax.bar(range(m.shape[1]), m[c].float().numpy())
            else:
                ax.bar(range(xi.shape[0]), xi.numpy(), color="grey")
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    if image is not None:
        cax = fig.add_axes((0.94, 0.2, 0.015, 0.6))
        bar = fig.colorbar(image, cax=cax)
        bar.set_label("map value per input (1: its peak)", fontsize=7)
    return _png(fig)


def _statistics_figure(result: dict[str, Any]) -> str | None:
    """Per explainer, each statistic's value against its threshold (distance in threshold
    units), flagged ones in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    explainers = list(result["explainers"])
    if not explainers:
        return None
    fig, axes = plt.subplots(1, len(explainers), figsize=(3.4 * len(explainers), 3.2),
                             squeeze=False, sharey=True)
    for ax, e in zip(axes[0], explainers, strict=True):
        rows = [s for s in result["explainers"][e]["statistics"]  # findings: its own section
                if s["value"] is not None and s["threshold"] is not None
                and s["statistic"] != "findings"]
        names = [s["statistic"] for s in rows]
        values = [s["value"] for s in rows]
        colours = ["#c62828" if s["flagged"] else ("#888888" if not s["active"] else "#1a7f37")
                   for s in rows]
        ax.barh(names, values, color=colours)
        for i, s in enumerate(rows):
            ax.plot([s["threshold"]] * 2, [i - 0.4, i + 0.4], color="black",
                    linestyle="-" if s["active"] else ":")
        ax.set_title(f"{e}: {result['explainers'][e]['verdict']}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("Each statistic (bar) and its calibrated threshold (black line; dotted: "
                 "inactive); red: flagged", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The short terminal summary: one line per explainer, then the architecture findings."""
    lines = [f"{result['model']}: {result['verdict'].upper()}"
             + (f" (reference {result['reference']})" if result.get("reference") else "")]
    for e, v in result["explainers"].items():
        why = "; ".join(v["reasons"][:3]) or "no statistic beyond its threshold"
        lines.append(f"  {e:<14} {v['verdict']:<12} {v['fragility']:<8} {why}")
    for f in result["architecture"]["evidence"].get("findings", [])[:5]:
        lines.append(f"  ! {f}")
    for e, why in result.get("skipped", {}).items():
        lines.append(f"  {e}: not audited ({why})")
    return lines


def _row(cells: Sequence[Any], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))


def _evidence(v: Any) -> str:
    return str(v) if isinstance(v, (list, dict)) else _num(v)


def audit_html(result: dict[str, Any], path: str | os.PathLike, *, x: Tensor | None = None,
               maps: dict[str, Tensor] | None = None) -> Path:
    """One self-contained HTML file: the verdicts, every statistic with its threshold and
    evidence, the maps figure and the statistics figure (inline PNG), how the thresholds were
    made."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>xred audit: "
             f"{esc(result['model'])}</title><style>body{{font-family:sans-serif;max-width:1100px;"
             "margin:2em auto;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
             ".v{font-weight:bold}img{max-width:100%}</style></head><body>",
             f"<h1>Can I trust the explanations of <code>{esc(result['model'])}</code>?</h1>",
             f"<p class='v' style='color:{COLOURS[result['verdict']]}'>Overall: "
             f"{esc(result['verdict'])}</p>",
             f"<p>{result['inputs']} inputs; "
             + (f"reference <code>{esc(result['reference'])}</code>; " if result.get("reference")
                else "no reference; ")
             + f"{result['seconds'].get('total', 0):.0f} s.</p>",
             "<h2>Verdicts</h2><table>",
             _row(["explainer", "verdict", "fragility", "why"], "th")]
    for e, v in result["explainers"].items():
        parts.append(_row([esc(e), f"<span class='v' style='color:{COLOURS[v['verdict']]}'>"
                           f"{v['verdict']}</span>",
                           f"<span style='color:{COLOURS[v['fragility']]}'>{v['fragility']}"
                           "</span>", esc("; ".join(v["reasons"]) or "–")]))
    parts.append("</table>")
    arch = result["architecture"]
    findings = arch["evidence"].get("findings", [])
    parts.append("<h2>Architecture</h2><p>" + (
        "<br>".join(esc(f) for f in findings) if findings else
        "No sign of architecture surgery (mod or rounding operations, weights orders of "
        "magnitude above the scale, constant channels).") + "</p>")
    if x is not None and maps:
        parts.append("<h2>Maps</h2><img src='data:image/png;base64,"
                     + _maps_figure(x, maps, f"{result['model']}: maps of the predicted class")
                     + "'><p><i>First inputs and each explainer's normalised map of the "
                     "predicted class (occlusion: the reference ranking).</i></p>")
    fig = _statistics_figure(result)
    if fig:
        parts.append("<h2>Statistics</h2><img src='data:image/png;base64," + fig + "'>")
    for e, v in result["explainers"].items():
        parts.append(f"<h3>{esc(e)}</h3><table>"
                     + _row(["check", "statistic", "value", "bad side", "threshold", "flagged",
                             "evidence"], "th"))
        for s in v["statistics"]:
            ev = v["checks"].get(s["check"], {}).get("evidence", {})
            parts.append(_row([esc(s["check"]), esc(s["statistic"]), _num(s["value"]),
                               s["bad"], _num(s["threshold"]) + ("" if s["active"] else " (off)"),
                               "<b>yes</b>" if s["flagged"] else "no",
                               esc(", ".join(f"{k}: {_evidence(val)}"
                                             for k, val in ev.items()))[:600]]))
        skipped = {k: c["skipped"] for k, c in v["checks"].items() if c.get("skipped")}
        parts.append("</table>" + "".join(f"<p>{esc(k)}: not run ({esc(w)})</p>"
                                          for k, w in skipped.items()))
    made = result.get("thresholds") or {}
    parts.append("<h2>How the thresholds were made</h2><pre>"
                 + esc(_short_json(made)) + "</pre>")
    parts.append("<p><small>xred audit; statistics documented in xred.audit.checks, the "
                 "verdict rule in xred.audit.verdict.</small></p></body></html>")
    text = "\n".join(parts)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _short_json(obj: Any) -> str:
    import json

    text = json.dumps(obj, indent=1, default=str)
    return text if len(text) < 4000 else text[:4000] + "\n..."


def statistic_figure(rows: Sequence[dict[str, Any]], thresholds: Any, path: str | os.PathLike,
                     title: str = "Audit statistics on the calibration set") -> Path:
    """docs/audit.md's figure: per statistic (panel) and explainer (column), the values of the
    clean pairs (blue), targeted manipulated pairs (red) and the other explainers of manipulated
    models (grey), with each fitted threshold (a line; dashed: inactive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xred.audit.checks import STATISTICS

    stats = [s for s in STATISTICS if s != "findings"]
    explainers = sorted({r["explainer"] for r in rows})
    cols = 3
    nrows = -(-len(stats) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(stats):]:
        ax.set_visible(False)
    for ax, st in zip(axes.flat, stats, strict=False):
        if not any(r["stats"].get(st) is not None for r in rows):
            ax.set_visible(False)
            continue
        for i, e in enumerate(explainers):
            for r in rows:
                v = r["stats"].get(st)
                if r["explainer"] != e or v is None or not math.isfinite(v):
                    continue
                colour = ("#1f77b4" if not r["manipulated"] else
                          "#d62728" if r["targeted"] else "#999999")
                offset = -0.15 if not r["manipulated"] else (0.15 if r["targeted"] else 0.0)
                caught = (r["stats"].get("findings") or 0) > 0  # by the architecture rule
                ax.plot(i + offset, v, "o", color=colour, markersize=3, alpha=0.8,
                        markerfacecolor="none" if caught else colour)
            t = thresholds.get(e, st)
            if t is not None and math.isfinite(t.value):
                ax.plot([i - 0.35, i + 0.35], [t.value] * 2, color="black",
                        linestyle="-" if t.active else "--", linewidth=1)
        ax.set_xticks(range(len(explainers)))
        ax.set_xticklabels(explainers, fontsize=7)
        ax.set_title(f"{st} (bad: {STATISTICS[st][0]})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: clean (blue), manipulated (red), "
                 "other explainers of manipulated models (grey)\nhollow: caught by the "
                 "architecture check (not fitted on); lines: thresholds (dashed: inactive)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out
