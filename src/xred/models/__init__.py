"""Models: the registry (``load``, ``available``, ``describe``, ``save``) and the zoo."""

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

__all__ = ["ARCHITECTURES", "Architecture", "available", "build", "cam_layer", "check_input",
           "describe",
           "get_architecture", "load", "register", "resize", "save"]
