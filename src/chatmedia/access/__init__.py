"""Who may do what: principals, scopes, tenants and conversation restrictions."""
