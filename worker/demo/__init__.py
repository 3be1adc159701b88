"""``margin-call demo``: a market crash on the embedded stack, end to end, driven through public interfaces.

Two sides, kept apart:

- the **exchange** (``exchange``: the accounts, the crash and the rebound, the
  market that quotes the venue simulator's books; ``roles``: the deposit
  handler, the treasury and support staff) talks to the case manager only
  through its HTTP API and to the venue simulator only through its admin
  routes: it imports nothing of ``activities`` (``tests/test_layers.py`` holds
  it to that);
- the **operator** (``run``: brings the stack up with the demo's policy and
  watches the cases close; ``summary``: the audit at the end) owns the stack,
  so it may read the ledger, the webhook receiver and the simulator directly.

This package's ``__init__`` imports nothing, so that importing the exchange
side does not pull in the operator's.
"""
