"""`python -m inventory_pipeline.demo` (`make demo`): the weekly story on the embedded stack."""

import sys

from inventory_pipeline.demo.story import main

sys.exit(main())
