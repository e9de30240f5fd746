"""`python -m hallu COMMAND ...`: the same entry as the `hallu` console script."""

from hallu.commands import cli

if __name__ == "__main__":
    cli()
