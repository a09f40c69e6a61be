"""``python -m jaxood.cli ...`` = ``jaxood ...``."""

import sys

from jaxood.cli import main

sys.exit(main())
