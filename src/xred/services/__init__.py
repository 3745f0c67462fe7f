"""One plain function per user action: typed arguments in, a result object out (``to_dict()``
for metrics.json), an optional ``progress(fraction, message)`` callback. The ``xred`` command and
the web app call these and only parse, print or draw around them."""

from xred.services.attack import AttackResult, attack
from xred.services.audit import AuditResult, audit
from xred.services.common import LoadedModel, Progress, open_model
from xred.services.evaluate import Accuracy, accuracy
from xred.services.explain import ExplainResult, explain
from xred.services.inspect import inspect
from xred.services.predict import Prediction, predict

__all__ = ["Accuracy", "AttackResult", "AuditResult", "ExplainResult", "LoadedModel",
           "Prediction", "Progress", "accuracy", "attack", "audit", "explain", "inspect",
           "open_model", "predict"]
