"""abri: a sovereign smart-home kit: the engine (tui.core) and the installer UI (tui.app)."""

__version__ = "0.1.0"
