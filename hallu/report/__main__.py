"""`python -m hallu.report RUN_DIR` (hallu/report/html.py), or a multirun directory
(hallu/report/multirun.py: its studies side by side)."""

import sys

from hallu.report.multirun import is_multirun

if len(sys.argv) > 1 and is_multirun(sys.argv[1]):
    from hallu.report.multirun import main
else:
    from hallu.report.html import main

sys.exit(main(sys.argv[1:]))
