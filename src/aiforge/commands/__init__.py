"""CLI commands contributed by task areas; each module exposes ``register(app)``."""
