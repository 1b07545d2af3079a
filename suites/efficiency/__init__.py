"""Efficiency suite: size, exact FLOPs, latency, peak memory, energy and compression
trade-offs. The suite class lives in `suite.py`; the measuring pieces are importable on
their own (`flops`, `latency`, `memory`, `energy`, `compression`, `functional`)."""
