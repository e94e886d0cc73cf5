"""`python -m ssimctr` is the `ssimctr` command."""

from ssimctr.cli.main import main

main()
