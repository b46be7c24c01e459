"""The capture-to-verdict pipeline, as pure functions over arrays wherever possible.

- :mod:`.quality`: is a frame good enough to judge.
- :mod:`.inference`: runs the model bundle on a frame (:class:`~.inference.Analyzer`).
- :mod:`.scoring`: turns raw model outputs into calibrated scores and familiarity.
- :mod:`.verdict`: combines per-image analyses into an item verdict (:func:`~.verdict.decide`).
"""
