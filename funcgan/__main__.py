"""``python -m funcgan``: the command line."""

from funcgan.cli import console_main

console_main()
