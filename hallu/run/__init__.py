"""Running a study: launch, prepare, plan, the worker, and the local and Ray executors."""
