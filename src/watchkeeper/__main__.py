"""`python -m watchkeeper`."""

from watchkeeper.cli import main

main()
