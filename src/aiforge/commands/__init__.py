"""CLI command modules contributed by task areas (listed in ``aiforge.cli.COMMAND_MODULES``)."""
