"""Offline training: labelled text in, a self-contained checkpoint out."""
