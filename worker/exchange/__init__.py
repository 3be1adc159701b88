"""The exchange's side of the dev stack: a small exchange that talks to the case manager as a real one would.

Everything here goes through public interfaces only: the HTTP API (``api``:
feeds, reference data, deposits, staff actions, the insurance fund) and the
venue simulator's admin routes over HTTP (``market``: books quoted around the
marks). It imports nothing of ``activities`` (``tests/test_layers.py`` holds it
to that), so what works here works for an exchange on another machine.

- ``listings``: the sample listings (assets, instruments and their tier tables), pure data;
- ``api``: ``ApiClient``, the HTTP API's routes as typed calls;
- ``market``: ``Market``, the marks kept fresh and the simulator's books quoted around them;
- ``sample``: the sample exchange ``margin-call up --sample-exchange`` loads through the feeds.
"""
