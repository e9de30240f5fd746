"""`python -m hallu.report RUN_DIR`: the command line is hallu/report/html.py; the document is
built section by section in hallu/report/sections.py and rendered by hallu/report/doc.py."""

import sys

from hallu.report.html import main

sys.exit(main(sys.argv[1:]))
