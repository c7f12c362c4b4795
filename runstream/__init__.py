"""runstream."""
