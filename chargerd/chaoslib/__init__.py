"""The chaos runner's parts: what the CSMS saw (journal), what must hold (invariants),
the disk that fills up (tinydisk) and the driver of one randomized session (session).

``python -m chargerd.chaos`` (``./dev chaos``) ties them together.
"""
