"""The pieces of ``python -m chargerd.bench``: figures and their report, probes, phases."""
