"""``seqbridge`` subcommands kept apart from cli.py: each module is one command group, a thin
adapter over a service."""
