"""colorfilter: CoLoR-Filter pre-training data selection (arXiv 2406.10670).

The public Python API is what `__all__` names (documented in the README, section "Python API");
everything else is private. `import colorfilter` itself stays as light as the CLI needs: the
API module (config, storage, pyarrow) loads on first use of one of its names.

    import colorfilter as cf
    cfg = cf.load_config("configs/demo.yaml", overrides=["seq_len=256"])
    cf.run(cfg, stages="prepare,score")
    scorer = cf.load_scorer("outputs/demo")
    ds = cf.load_selection("outputs/demo/selected/color-tau16")

Integrations with other frameworks (optional extras) live in `colorfilter.integrations`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# exported name -> the module that defines it
_EXPORTS = {
    "load_config": "colorfilter.api",
    "run": "colorfilter.api",
    "load_scorer": "colorfilter.api",
    "load_selection": "colorfilter.api",
    "Config": "colorfilter.config",
    "Scorer": "colorfilter.scorer",
    "ScorerSettings": "colorfilter.scorer",
    "ChunkScores": "colorfilter.scorer",
    "TextScores": "colorfilter.scorer",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # the same names for type checkers (re-exported: `X as X`)
    from colorfilter.api import load_config as load_config
    from colorfilter.api import load_scorer as load_scorer
    from colorfilter.api import load_selection as load_selection
    from colorfilter.api import run as run
    from colorfilter.config import Config as Config
    from colorfilter.scorer import ChunkScores as ChunkScores
    from colorfilter.scorer import Scorer as Scorer
    from colorfilter.scorer import ScorerSettings as ScorerSettings
    from colorfilter.scorer import TextScores as TextScores


def __getattr__(name: str) -> Any:
    """Load an exported name's module on first use (PEP 562), so the CLI starts as fast."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'colorfilter' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
