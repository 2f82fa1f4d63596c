"""Measuring transcripts: the shared speech corpus with its references, and word error rate."""
