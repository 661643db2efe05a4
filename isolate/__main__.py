"""``python -m isolate``: the same as the ``isolate`` command."""
import sys

from isolate.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
