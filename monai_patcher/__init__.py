"""monai_patcher: the Patcher vision transformer (Ou et al., MICCAI 2022) as a MONAI plugin.

Importing this package makes its public names resolvable in MONAI bundle configs, both by dotted path
(``"_target_": "monai_patcher.networks.Patcher"``) and by short name after ``"$import monai_patcher"``.
"""

__version__ = "0.1.0"

from . import networks  # noqa: E402
from .networks import *  # noqa: F401,F403,E402

__all__ = ["__version__", "networks"] + list(networks.__all__)
