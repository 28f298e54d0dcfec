"""funcgan."""
