"""`python -m hallu.launch`: the entry point users type; the work is in hallu/run/launch.py."""

from hallu.run.launch import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    cli()
