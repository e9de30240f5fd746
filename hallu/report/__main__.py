"""`python -m hallu.report RUN_DIR`: see hallu/report/html.py."""

import sys

from hallu.report.html import main

sys.exit(main(sys.argv[1:]))
