"""mlflow stays unimported unless a job tracks with it (import cycles: tests/test_architecture.py)."""

from __future__ import annotations

import subprocess
import sys


def test_package_and_backend_none_do_not_import_mlflow() -> None:
    code = (
        "import sys\n"
        "from omegaconf import OmegaConf\n"
        "from ssimctr.config.schema import TrackingConfig\n"
        "from ssimctr.tracking import make_tracker\n"
        "import ssimctr.tracking.runs, ssimctr.tracking.store\n"
        "make_tracker(OmegaConf.structured(TrackingConfig))  # tracking=none\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'mlflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
