"""The bench and soak tools: run by `make bench` and `make soak` from the repository root, never installed."""
