"""Subcommands of the `vqae` CLI, one module each (see vqae.cli.COMMANDS)."""
