"""Names the command line needs without loading torch."""

DEFAULT_MODEL = "smollm2-135m-instruct"
