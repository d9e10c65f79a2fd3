"""Fetching from other servers on a client's behalf, safely: which destinations may be
reached (policy), how source URLs are read (urls), the credentials sent to sources
(credentials) and the fetcher that puts them together (fetcher)."""
