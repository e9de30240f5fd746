"""The Ray Job entry point: the ordinary launcher, run inside the cluster.

`hallu.run.jobs.submit` starts it as `python jobs/entry.py <overrides> run_id=<id>` in the uploaded
working directory. It joins the cluster it runs on (cluster kind `ray`; Ray sets RAY_ADDRESS for
jobs) and keeps every other setting of the preset (workers, GPUs per worker, retries).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the uploaded hallu first

from hallu.run.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "cluster.kind=ray", "cluster.address=null"]))
