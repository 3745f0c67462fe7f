"""Make Grad-CAM lie by editing the architecture, and detect it (Viering et al. 2019, "How to
manipulate CNNs to make them lie: the GradCAM case").

``tamper(model, technique, calibration)`` applies T1 ``"constant"``, T2 ``"image"``, T3
``"random"`` or T4 ``"backdoor"`` inside the model's own layers
(:mod:`~xred.attacks.architecture.widen`, :mod:`~xred.attacks.architecture.inplace`): a
:class:`Manipulated` whose ``network`` is the original class with widened layers (T3, T4 and,
where the zero padding cannot draw the map, T1/T2 also with a small module or buffer inside a
convolution, :mod:`xred.models.tampered`), fooling Grad-CAM at the layer users hook
(:func:`standard_layer`). A model the widening cannot edit falls back to a :class:`TamperedModel`
wrapper (T3, T4; Grad-CAM at its layer ``"cam"``). ``save_tampered`` writes either as
safetensors + JSON (in the layers: an ordinary checkpoint of the architecture with the widened
``widths``); ``xred.models.load`` reads it back without the attack code.
``inspect_model`` looks for the techniques' signatures (or lists the differences from a
reference); ``evaluate_tampered`` measures an attack as the paper's tables do.
"""

from xred.attacks.architecture.detect import Finding, Inspection, inspect_model, probe_inputs
from xred.attacks.architecture.evaluate import evaluate_tampered, library_l1
from xred.attacks.architecture.inplace import Manipulated
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
    STANDARD_LAYERS,
    TECHNIQUES,
    TamperedModel,
    base_gradcam,
    save_tampered,
    standard_layer,
    tamper,
)

__all__ = ["CAM_LAYER", "STANDARD_LAYERS", "TECHNIQUES", "Finding", "Inspection", "Manipulated",
           "Split", "TamperedModel", "base_gradcam", "default_sticker", "evaluate_tampered",
           "inspect_model", "library_l1", "load_sticker", "paste_sticker", "probe_inputs",
           "save_tampered", "smiley", "split_at", "standard_layer", "tamper", "target_map"]
