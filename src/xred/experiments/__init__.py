"""Reproductions of the papers' tables: ``xred run CONFIG`` reads a config (experiments/*.json),
computes its cells (each cached on disk and reused), and renders a markdown report in docs/.

One module per reproduction, each on :mod:`~xred.experiments.harness` (config → cached cells →
results → a pure render, so ``xred run CONFIG --render-only`` re-writes a report without
computing): :mod:`~xred.experiments.heo` (Heo et al.), :mod:`~xred.experiments.viering`
(Viering et al.) and :mod:`~xred.experiments.input_attacks` (ADV², Ghorbani, Dombrowski, AAI)."""
