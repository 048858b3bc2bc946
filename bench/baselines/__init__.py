"""Forwarders bizproxy is compared with; each is also a plain script run by path."""
