"""The HTTP face of chatmedia: the app factory, thin routes, and the HTTP semantics they use."""
