"""stancerun: fine-tune pretrained encoders into text classifiers from a TOML experiment file.

The public API for plugin authors lives here; importing it never imports torch.
"""

from stancerun.hookspecs import hookimpl
from stancerun.options import File, Range, Split
from stancerun.contracts import EvalPrediction

__version__ = "0.1.0"

__all__ = ["EvalPrediction", "File", "Range", "Split", "hookimpl", "__version__"]
