"""Statistics over a run's rows: bootstrap intervals, permutation tests, locus, noise floor flags.

Every function here takes plain arrays (`PairGrid`), so it can be tested on data with a planted
answer; `pipeline.analyse` turns a run's rows into one `results.Results` (every number any output
prints), and `hallu/report/` only formats it.
"""
