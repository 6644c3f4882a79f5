"""Pipeline steps, one module each; discovered by :mod:`pipeline.core.registry`."""
