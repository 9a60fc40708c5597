"""`raft-distill replicate`: the paper's Table 1 and ablations as arms x seeds.

config.py  the replicate YAML (fit + eval configs, arms, seeds) and the arms' switches
table.py   pure arithmetic of the report (seed stats, relative change, loss recovered)
run.py     orchestration: fit each arm x seed (resumable), one eval run, the report
report.py  report.md / report.png rendering
"""

from raft_distill.replicate.config import (
    ARMS,
    ReplicateConfig,
    config_from_dict,
    load_replicate_config,
)

__all__ = ["ARMS", "ReplicateConfig", "config_from_dict", "load_replicate_config"]
