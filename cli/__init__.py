"""The `atlas` command line."""
