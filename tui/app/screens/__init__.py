"""The installer's screens."""
