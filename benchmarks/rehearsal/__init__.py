"""True-scale rehearsal of the paper protocols (see docs/rehearsal.md)."""
