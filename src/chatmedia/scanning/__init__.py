"""Malware scanning: the clamd client and the scan workflow."""
