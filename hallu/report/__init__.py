"""Turning stored rows into what a researcher reads: terminal lines, summary.md, report.html."""
