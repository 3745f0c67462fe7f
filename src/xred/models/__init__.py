"""Models: the registry (``load``, ``available``, ``describe``, ``save``) and the zoo."""

from xred.models.modes import eval_mode
from xred.models.registry import (
    ARCHITECTURES,
    Architecture,
    available,
    build,
    cam_layer,
    check_input,
    describe,
    get_architecture,
    load,
    register,
    resize,
    save,
)
from xred.models.resolve import Resolved, resolve

__all__ = ["ARCHITECTURES", "Architecture", "Resolved", "available", "build", "cam_layer",
           "check_input", "describe", "eval_mode", "get_architecture", "load", "register", "resize",
           "resolve", "save"]
