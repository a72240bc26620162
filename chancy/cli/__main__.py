"""``python -m chancy.cli``: the same as the ``chancy`` script."""

from chancy.cli import main

main()
