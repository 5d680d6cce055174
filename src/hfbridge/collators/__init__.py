"""hfbridge.collators (being built)."""

__all__: list[str] = []
