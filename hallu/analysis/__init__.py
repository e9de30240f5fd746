"""Statistics over a run's rows: bootstrap intervals, permutation tests, locus, noise floor flags.

Every function here takes plain arrays (`PairGrid`), so it can be tested on data with a planted
answer; `hallu/report/html.py` turns a run's table into grids and the results into a report.
"""
