"""``python -m mobileseg``: the same command line as the ``mobileseg`` script."""

from mobileseg.cli import main

main()
