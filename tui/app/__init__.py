"""abri's Textual installer. Everything it does goes through tui.core."""
