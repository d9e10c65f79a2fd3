"""Resumable uploads: tus 1.0 (https://tus.io/protocols/resumable-upload), on any number of
nodes without sticky sessions."""
