//! flotilla library: the CLI commands.
