"""hfbridge.adapters (being built)."""

__all__: list[str] = []
