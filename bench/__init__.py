"""Benchmarks for bizproxy: a static upstream, a load generator, targets, and the figures.

Run ``python -m bench.run`` for the proxy table and ``python -m bench.transports`` for the
outbound transports behind ``httpx.AsyncClient``. Modules here import nothing heavy at
import time, so a child process run by another interpreter can import the package.
"""
