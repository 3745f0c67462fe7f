"""``xred audit``: can I trust this model's explanations? A verdict per explainer with evidence
(audit.json), a self-contained HTML report and a short summary; exit status 1 when a verdict is
not ``trustworthy``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xred.cli.common import non_negative, positive_int

HELP = ("audit a model for manipulated explanations (Heo-style fine-tuning, Viering-style "
        "surgery): per explainer trustworthy / suspicious / manipulated with each check's "
        "score, threshold and evidence; writes audit.json and audit.html (exit status 1 when "
        "it flags)")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="name or xred checkpoint (safetensors + JSON;"
                    " nothing is unpickled)")
    sp.add_argument("--explainer", nargs="+", help="explainers to audit (default: gradcam lrp "
                    "gradient; also lrp_t, simplegrad_t, smoothgrad, ...)")
    sp.add_argument("--dataset", help="audit on the first --count inputs of this dataset "
                    "(default: the model's own; ImageNet models: the sample photos)")
    sp.add_argument("--image-folder", help="audit on the images in this folder")
    sp.add_argument("--image", nargs="+", help="audit on these image files")
    sp.add_argument("--count", type=positive_int, default=64,
                    help="inputs to audit on (default 64)")
    sp.add_argument("--reference", help="the claimed original (name or checkpoint): adds the "
                    "same-predictions-different-maps comparison")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--thresholds", help="thresholds file (default: the calibrated ones shipped "
                    "with xred, made by `xred run experiments/audit.json`)")
    sp.add_argument("--stability-eps", type=non_negative, default=8 / 255,
                    help="L∞ budget of the stability check's noise and AAI (default 8/255)")
    sp.add_argument("--stability-inputs", type=positive_int, default=16,
                    help="inputs attacked by the stability check (default 16)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred import services
    from xred.audit import AuditSettings
    from xred.io import write_json
    from xred.report.audit import audit_html, summary_lines

    def progress(fraction: float, message: str) -> None:
        if not args.quiet and message != "done":
            print(f"audit: {message} ...", flush=True)

    settings = AuditSettings(stability_eps=args.stability_eps,
                             stability_inputs=args.stability_inputs, seed=args.seed)
    result = services.audit(args.model, explainers=args.explainer, dataset=args.dataset,
                            image_folder=args.image_folder, images=args.image, count=args.count,
                            reference=args.reference, weights=args.weights,
                            thresholds=args.thresholds, settings=settings,
                            data_dir=args.data_dir, device=args.device, progress=progress)
    report = result.to_dict()
    out = Path(args.out)
    write_json(out / "audit.json", report)
    page = audit_html(report, out / "audit.html", x=result.x, maps=result.maps)
    print("\n".join(summary_lines(report)))
    print(f"report: {page}\naudit: {out / 'audit.json'}")
    args.exit_status = 0 if result.verdict == "trustworthy" else 1
    return {**report, "report": str(page), "audit": str(out / "audit.json")}
