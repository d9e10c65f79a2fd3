"""The agent's media page of a conversation: a server-rendered shell and a little
JavaScript (static/) that calls the public API with a page token (chatmedia.access.tokens)."""
