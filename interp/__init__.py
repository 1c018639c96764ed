"""interp: a mechanistic-interpretability workbench.

The library is everything reusable: models (`interp.models`), hook names on any backend
(`interp.hooks`), attention-sink metrics (`interp.attention`), interventions, run folders
(`interp.runs`) and plotly figure builders (`interp.figures`). Experiments and the app build on
it; it never imports them.
"""

import os as _os

# TransformerLens pulls in wandb; never let an import or a run reach for the network.
_os.environ.setdefault("WANDB_MODE", "disabled")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class InterpError(Exception):
    """Bad input or state a user can fix. The message says what was wrong and how to fix it;
    the CLI prints it as one paragraph (no traceback) and exits with status 2."""
