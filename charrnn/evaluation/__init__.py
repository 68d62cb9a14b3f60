"""Evaluation: stateful scoring of whole texts and splits, records, per-line scores, dynamic evaluation."""
