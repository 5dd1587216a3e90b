"""``python -m bigimg``: the ``bigimg`` command (Ctrl-C handled from its first line)."""

from bigimg.cli import main

main()
