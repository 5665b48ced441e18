"""One module per top-level subcommand; each exposes register(subparsers)."""
