"""`python -m admin`: the same as the `modelcache` console script."""

import sys

from admin.cli import main

sys.exit(main())
