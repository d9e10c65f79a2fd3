"""Media: what images, video, audio and PDFs are (dimensions, duration, placeholder,
waveform, pages), their previews, and their metadata taken out. Untrusted bytes are decoded
only in sandboxed processes (sandbox.py); the server reads headers at most (header.py)."""
