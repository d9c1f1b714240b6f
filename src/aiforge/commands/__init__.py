"""CLI commands contributed by task areas (each module has ``register(app)``)."""
