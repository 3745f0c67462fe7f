"""Reproductions of the papers' tables: ``xred run CONFIG`` reads a config (experiments/*.json),
computes its cells (each cached on disk and reused), and renders a markdown report in docs/.

One module per reproduction: :mod:`~xred.experiments.heo` (Heo et al.),
:mod:`~xred.experiments.input_attacks` (ADV², Ghorbani, Dombrowski, AAI) and, for now,
``xred.attacks.architecture.experiment`` (Viering et al.)."""
