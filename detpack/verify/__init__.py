"""Verifying: comparing two builds and explaining why, checking under varied conditions, rebuilding from a
record or a PyPI release."""
