"""``python -m funcgan``: the command line."""

from funcgan.cli import console_main

if __name__ == "__main__":
    console_main()
