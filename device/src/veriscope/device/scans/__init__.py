"""Scans: their records, their storage, and the manager that runs them."""
