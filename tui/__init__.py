"""abri: a sovereign smart-home kit. The package holds the engine (tui.core) and the UI (tui.app)."""

__version__ = "0.1.0"
