"""Cold-start methods that wrap any model through the towers() contract (docs/methods.md §3.8)."""
