"""Deciphering adversarial examples: which internal pathways an attack uses (Bluff, Das et al.
2020: :mod:`xred.decipher.pathways`, graph schema in :mod:`xred.decipher.schema`, the exploited-
channel check in :mod:`xred.decipher.ablation`) and what saliency maps say about it (Gu & Tresp
2019: :mod:`xred.decipher.explaining`)."""

from xred.decipher.ablation import ablation, zeroed_copy
from xred.decipher.activations import default_layers, layer_maxima, recording
from xred.decipher.edges import PairSpec, connecting_convs, depthwise_influence, edge_weights
from xred.decipher.pathways import (
    ROLES,
    Pathways,
    attack_pathways,
    check_eps,
    class_index,
    compare,
    importance,
    pathways_from_inputs,
    percentile,
    roles,
    vulnerability,
)
from xred.decipher.schema import SCHEMA

__all__ = ["ROLES", "SCHEMA", "PairSpec", "Pathways", "ablation", "attack_pathways",
           "check_eps", "class_index", "compare", "connecting_convs", "default_layers",
           "depthwise_influence", "edge_weights", "importance", "layer_maxima",
           "pathways_from_inputs", "percentile", "recording", "roles", "vulnerability",
           "zeroed_copy"]
