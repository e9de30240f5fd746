"""`python -m hallu.report RUN_DIR`: the command line is hallu/report/html.py; the document is
built section by section in hallu/report/sections.py and rendered by hallu/report/doc.py.
`python -m hallu.report MULTIRUN_DIR` (a directory with multirun.json) compares its studies side
by side instead (hallu/report/multirun.py)."""

import sys

from hallu.report.multirun import is_multirun

if len(sys.argv) > 1 and is_multirun(sys.argv[1]):
    from hallu.report.multirun import main
else:
    from hallu.report.html import main

sys.exit(main(sys.argv[1:]))
