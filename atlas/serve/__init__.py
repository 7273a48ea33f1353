"""The read-only HTTP API of an atlas database (`atlas serve`)."""
