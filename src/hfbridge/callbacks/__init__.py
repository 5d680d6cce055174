"""hfbridge.callbacks (being built)."""

__all__: list[str] = []
