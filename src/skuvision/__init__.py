"""skuvision: recognise packaged retail products (SKUs) from camera images.

Kept import-light on purpose: Hydra plugin discovery and the CLI import this
package, so torch/lightning/wandb are only imported by the modules that need them.
"""

import os as _os

# OpenMP threads that spin while waiting make CPU training crawl (5x here) as soon as data-loader
# workers or another process share the cores; passive waiting costs nothing on GPU nodes.
# Effective only when skuvision is imported before torch, which every skuvision entry point does.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
