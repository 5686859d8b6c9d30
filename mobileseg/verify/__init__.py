"""Parity metrics, parity runs and reports (`metrics`, `parity`, `report`, `artifact`)."""
