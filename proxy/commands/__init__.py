"""One module per `speclearn` sub-command: `configure(parser)` and `run(args) -> exit code`."""
