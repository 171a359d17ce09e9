"""Everything that is not the charger: the bench CSMS, the demo, the test rig, the speed
and footprint figures and the chaos runner.

Nothing in the daemon imports from here; a charger can run without this package.
``python -m chargerd.bench`` prints the figures, ``python -m chargerd.bench.csms`` runs the
bench CSMS, ``python -m chargerd.bench.demo`` the demo, ``python -m chargerd.bench.chaos``
the chaos run.
"""
