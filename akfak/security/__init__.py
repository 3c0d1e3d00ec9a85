"""Security: the authorizer and its ACLs (authentication comes with the listeners)."""
