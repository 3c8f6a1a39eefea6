"""Backends: each module implements the seven primitives listed in fastconv/ops.py and
`unavailable_reason()` (None when it can run here)."""
