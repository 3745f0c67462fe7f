"""Make Grad-CAM lie by editing the architecture, and detect it (Viering et al. 2019, "How to
manipulate CNNs to make them lie: the GradCAM case").

``tamper(model, technique, calibration)`` applies T1 ``"constant"``, T2 ``"image"``, T3
``"random"`` or T4 ``"backdoor"`` to any CNN that can be cut after its Grad-CAM layer and returns a
:class:`TamperedModel` (predictions unchanged, Grad-CAM at layer ``"cam"`` manipulated);
``save_tampered`` writes it as safetensors + JSON, ``xred.models.load`` reads it back.
``inspect_model`` looks for the techniques' signatures (or lists the differences from a
reference); ``evaluate_tampered`` measures an attack as the paper's tables do.
"""

from xred.attacks.architecture.detect import Finding, Inspection, inspect_model, probe_inputs
from xred.attacks.architecture.evaluate import evaluate_tampered
from xred.attacks.architecture.patterns import (
    default_sticker,
    load_sticker,
    paste_sticker,
    smiley,
    target_map,
)
from xred.attacks.architecture.split import Split, split_at
from xred.attacks.architecture.surgery import (
    CAM_LAYER,
    TECHNIQUES,
    TamperedModel,
    base_gradcam,
    save_tampered,
    tamper,
)

__all__ = ["CAM_LAYER", "TECHNIQUES", "Finding", "Inspection", "Split", "TamperedModel",
           "base_gradcam", "default_sticker", "evaluate_tampered", "inspect_model",
           "load_sticker", "paste_sticker", "probe_inputs", "save_tampered", "smiley",
           "split_at", "tamper", "target_map"]
