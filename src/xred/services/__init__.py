"""One plain function per user action: typed arguments in, a result object out (``to_dict()``
for metrics.json), an optional ``progress(fraction, message)`` callback. The ``xred`` command and
the web app call these and only parse, print or draw around them."""

from xred.services.attack import AttackResult, attack
from xred.services.audit import AuditResult, audit
from xred.services.common import LoadedModel, Progress, open_model
from xred.services.decipher import (
    DecipherResult,
    ExplainAdversarialResult,
    decipher,
    explain_adversarial,
)
from xred.services.evaluate import Accuracy, accuracy
from xred.services.explain import ExplainResult, explain
from xred.services.fool import (
    EvaluateFoolingResult,
    FoolingEvaluation,
    FoolResult,
    evaluate_fooling,
    fool,
)
from xred.services.harden import HardenOutput, RobustnessResult, harden, robustness
from xred.services.inspect import inspect
from xred.services.predict import Prediction, predict
from xred.services.probe import ProbeResult, probe
from xred.services.tamper import TamperResult, tamper

__all__ = ["Accuracy", "AttackResult", "AuditResult", "DecipherResult", "EvaluateFoolingResult",
           "ExplainAdversarialResult", "ExplainResult", "FoolResult", "FoolingEvaluation",
           "HardenOutput", "LoadedModel", "Prediction", "ProbeResult", "Progress",
           "RobustnessResult", "TamperResult", "accuracy", "attack", "audit", "decipher",
           "evaluate_fooling", "explain", "explain_adversarial", "fool", "harden", "inspect",
           "open_model", "predict", "probe", "robustness", "tamper"]
