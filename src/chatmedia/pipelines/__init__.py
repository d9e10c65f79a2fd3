"""Workflows: each is one function of numbered steps, with the undo of each step on failure."""
