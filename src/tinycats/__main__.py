"""`python -m tinycats` is the `tinycats` command."""

from tinycats.cli import main

main()
