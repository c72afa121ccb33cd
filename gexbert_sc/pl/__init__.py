"""Scanpy-style plots of GexBERT outputs (each returns its matplotlib ``Axes``)."""

from gexbert_sc.pl._survival import kaplan_meier

__all__ = ["kaplan_meier"]
