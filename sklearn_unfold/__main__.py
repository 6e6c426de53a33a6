"""``python -m sklearn_unfold compare``: the same as the ``sklearn-unfold`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
