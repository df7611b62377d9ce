"""p-diff."""
