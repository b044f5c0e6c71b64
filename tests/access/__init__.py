"""OAuth2/SMART identity tests."""
