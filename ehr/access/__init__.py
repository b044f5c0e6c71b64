"""Who may do what: OAuth2/SMART identity (``scopes``, ``oauth``) and authorization rules."""
