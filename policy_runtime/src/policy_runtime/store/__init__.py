"""Persistence of policies in MongoDB."""
