"""One module per ``rerankd`` subcommand; each defines ``register(subparsers)``."""
