"""The domain: money, portfolios, margin figures, liquidation plans and the operator's policies.

Pure and deterministic (no I/O, no clock, no Temporal), so that the case workflow
and the ledger activities compute the same figures from the same inputs. The
bottom layer: it imports nothing else from this project.
"""
