"""Statistics over a run's rows: bootstrap intervals, permutation tests, locus, noise floor flags.

Every function here takes plain arrays (`PairGrid`), so it can be tested on data with a planted
answer; `run_stats.analyse` turns a run's table into grids and their statistics, and
`hallu/report/` turns those into a report.
"""
