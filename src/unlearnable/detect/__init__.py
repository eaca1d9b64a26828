"""`unlearnable detect`: is a dataset protected, judged from the data alone (no clean copy)?

    from unlearnable.detect import detect
    r = detect(load_data("runs/lsp"), level="quick")
    r["score"], r["protected"], r["threshold"]
"""

from .core import (
    BUDGETS,
    FEATURES,
    DetectParams,
    detect,
    explain,
    load_calibration,
    measure,
    params_for,
)

__all__ = ["BUDGETS", "FEATURES", "DetectParams", "detect", "explain", "load_calibration", "measure", "params_for"]
