"""One module per ``subquad`` command; each defines ``register(subparsers)``."""
