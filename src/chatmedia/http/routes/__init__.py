"""Thin routes: parse the request, make one domain call, build the response."""
