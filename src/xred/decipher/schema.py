"""The JSON Schema of the pathway graph (``Pathways.to_graph()``, ``graph.json`` of
``xred decipher``). Version 1; fields are only ever added, never renamed or removed, so a reader
of version 1 keeps working. ``xred decipher`` writes it next to the graph (``graph.schema.json``).
"""

from __future__ import annotations

from typing import Any

from xred.decipher.pathways import ROLES, SCHEMA_ID, SCHEMA_VERSION

_NUM = {"type": "number"}
_PER_EPS = {"type": "array", "items": _NUM,
            "description": "one value per strength, in the order of attack.eps"}
_CLASS = {"type": "object", "required": ["index", "name", "images"],
          "properties": {"index": {"type": "integer", "minimum": 0},
                         "name": {"type": "string"},
                         "images": {"type": "integer", "minimum": 1,
                                    "description": "images of this class the statistics use"}}}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://xred.invalid/schemas/decipher-pathways-v1.json",
    "title": "xred attack-pathway graph (Bluff)",
    "description": (
        "Which channels an input attack suppresses, excites and exploits to push images of a "
        "benign class toward a target class (Das et al. 2020, Bluff). Layers are columns (in "
        "forward order), channels are nodes, edges join channels of consecutive layers. Every "
        "per-strength array is aligned with attack.eps."),
    "type": "object",
    "required": ["schema", "version", "model", "classes", "benign", "target", "attack",
                 "parameters", "layers", "edge_methods", "nodes", "edges"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "version": {"const": SCHEMA_VERSION,
                    "description": "bumped only if a field changes meaning"},
        "model": {"type": "string", "description": "zoo name or checkpoint path"},
        "classes": {"type": "array", "items": {"type": "string"},
                    "description": "the model's class names, by index"},
        "benign": {**_CLASS, "description": "the attacked images' true class"},
        "target": {**_CLASS, "description": "the class the (targeted) attack aims at"},
        "attack": {
            "type": "object", "required": ["name", "targeted", "eps", "success_rate"],
            "properties": {
                "name": {"type": "string", "description": "xred.attacks.input name, e.g. pgd"},
                "targeted": {"type": "boolean"},
                "eps": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                        "minItems": 1, "description": "strengths, strictly increasing"},
                "success_rate": {**_PER_EPS, "description": "fraction of the benign images "
                                 "classified as the target after the attack, per strength"},
                "options": {"type": "object"}, "seed": {"type": "integer"}}},
        "parameters": {
            "type": "object", "required": ["top_k", "top_edges", "dominant_percentile",
                                           "change_threshold"],
            "properties": {
                "top_k": {"type": "integer", "minimum": 1, "description": "channels kept per "
                          "ranking (benign, target, attacked importance, vulnerability)"},
                "top_edges": {"type": "integer", "minimum": 0,
                              "description": "edges kept per pair of consecutive layers"},
                "dominant_percentile": {"type": "number", "description": "a channel is dominant"
                                        " for a class at or above this percentile"},
                "change_threshold": {"type": "number", "description": "|Δ percentile| below "
                                     "this at the strongest attack: unchanged"}}},
        "layers": {
            "type": "array", "minItems": 1,
            "items": {"type": "object", "required": ["name", "index", "channels", "shown",
                                                      "role_counts"],
                      "properties": {
                          "name": {"type": "string", "description": "module name in the model"},
                          "index": {"type": "integer", "minimum": 0,
                                    "description": "column, in forward order"},
                          "channels": {"type": "integer", "minimum": 1},
                          "shown": {"type": "array", "items": {"type": "integer"},
                                    "description": "channels that are nodes of the graph"},
                          "role_counts": {"type": "object", "description": "over all the "
                                          "layer's channels, not only those shown",
                                          "additionalProperties": {"type": "integer"}}}}},
        "edge_methods": {
            "type": "array",
            "items": {"type": "object", "required": ["lower", "upper", "method"],
                      "properties": {
                          "lower": {"type": "string"}, "upper": {"type": "string"},
                          "method": {"enum": ["bluff", "gradient"], "description": (
                              "bluff: median over images of max over positions of the "
                              "depthwise convolution of the lower channel with the connecting "
                              "kernel; gradient: median of Σ_p A_i·∂max(A'_j)/∂A_i")},
                          "conv": {"type": ["string", "null"],
                                   "description": "the connecting convolution (bluff)"}}}},
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "layer", "layer_index", "channel", "role", "importance",
                             "percentile", "change", "vulnerability"],
                "properties": {
                    "id": {"type": "string", "description": "LAYER:CHANNEL, unique"},
                    "layer": {"type": "string"},
                    "layer_index": {"type": "integer", "minimum": 0},
                    "channel": {"type": "integer", "minimum": 0},
                    "role": {"enum": list(ROLES), "description": (
                        "suppressed_benign: dominant for the benign class, percentile falls by "
                        "≥ change_threshold; excited_target: dominant for the target, rises; "
                        "exploited: dominant for neither, dominant and risen under attack; "
                        "unchanged: |Δ| < change_threshold; other: the rest")},
                    "importance": {
                        "type": "object", "required": ["benign", "target", "attacked"],
                        "description": "median over images of the channel's max activation",
                        "properties": {"benign": _NUM, "target": _NUM, "attacked": _PER_EPS}},
                    "percentile": {
                        "type": "object", "required": ["benign", "target", "attacked"],
                        "description": "0..100 rank of the importance within the layer",
                        "properties": {"benign": _NUM, "target": _NUM, "attacked": _PER_EPS}},
                    "change": {**_PER_EPS,
                               "description": "attacked percentile − benign percentile"},
                    "vulnerability": {"type": "number", "minimum": 0,
                                      "description": "Σ_s |pct_s − pct_benign| / ε_s"},
                    "examples": {
                        "type": "array", "description": "training-set patches that activate "
                        "the channel most (optional)",
                        "items": {"type": "object", "required": ["index", "activation", "box"],
                                  "properties": {
                                      "index": {"type": "integer", "minimum": 0,
                                                "description": "index in the training split"},
                                      "activation": _NUM,
                                      "box": {"type": "array", "items": {"type": "integer"},
                                              "minItems": 4, "maxItems": 4,
                                              "description": "top, left, bottom, right "
                                              "(exclusive) in input pixels"}}}}}}},
        "edges": {
            "type": "array",
            "items": {
                "type": "object", "required": ["source", "target", "method", "weight"],
                "properties": {
                    "source": {"type": "string", "description": "node id in the lower layer"},
                    "target": {"type": "string", "description": "node id in the next layer"},
                    "method": {"enum": ["bluff", "gradient"]},
                    "weight": {"type": "object", "required": ["benign", "target", "attacked"],
                               "properties": {"benign": _NUM, "target": _NUM,
                                              "attacked": _PER_EPS}}}}},
    },
}
