"""The chaos runner's parts.

- journal: what the CSMS saw (every CALL and its answer, per connection);
- records: what the rig knows after a session, and the verdict's shape;
- invariants: the pure checks of one session;
- station: the session's hold on the daemon and the CSMS (kill-safe commands);
- session + injections: one randomized session, and what it does to the station;
- tinydisk: a state directory on a small tmpfs, filled on demand.

``python -m chargerd.bench.chaos`` (``./dev chaos``) ties them together.
"""
