"""The round functions and recipe sections of the methods other than TAPIR (core.rounds holds
TAPIR's): one module per method, named in core.recipes.METHOD_MODULES."""
