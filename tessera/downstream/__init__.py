"""Downstream use of embeddings: label-efficiency evaluation on labelled point tables."""
