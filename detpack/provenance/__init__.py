"""Provenance: writing in-toto statements, reading one (statement or DSSE envelope) back, signing."""
