"""mlflow stays unimported unless a job tracks with it (import cycles: tests/test_architecture.py)."""

from __future__ import annotations

import subprocess
import sys


def test_package_and_tracking_none_do_not_import_mlflow() -> None:
    code = (
        "import sys\n"
        "from omegaconf import OmegaConf\n"
        "from ssimctr.tracking import keeps_runs, make_tracker\n"
        "import ssimctr.tracking.runs, ssimctr.tracking.store\n"
        "none = OmegaConf.create({'_target_': 'ssimctr.tracking.base.NullTracker', 'uri': 'unused://'})\n"
        "assert not keeps_runs(none)\n"
        "make_tracker(none)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'mlflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
