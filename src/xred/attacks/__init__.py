"""Attacks on explanations."""
