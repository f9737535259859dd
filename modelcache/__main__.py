"""`python -m modelcache`: the same as the `modelcache` console script."""

import sys

from modelcache.cli.main import main

sys.exit(main())
