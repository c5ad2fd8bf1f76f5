"""monai_patcher: the Patcher vision transformer (Ou et al., MICCAI 2022) as a MONAI plugin.

Importing this package makes its public names resolvable in MONAI bundle configs, both by dotted path
(``"_target_": "monai_patcher.networks.Patcher"``) and by short name after ``"$import monai_patcher"``
(MONAI's ``ComponentLocator`` searches every loaded module whose name starts with ``monai``).
It also registers :class:`~monai_patcher.data.SimpleITKReader` with ``LoadImage(d)`` under the name
``"SimpleITKReader"`` (lowest priority: MONAI's own readers are still preferred when no reader is named).
"""

__version__ = "0.1.0"

from . import allocator, data, inferers, losses, networks, transforms  # noqa: E402
from .data import *  # noqa: F401,F403,E402
from .inferers import *  # noqa: F401,F403,E402
from .losses import *  # noqa: F401,F403,E402
from .networks import *  # noqa: F401,F403,E402
from .transforms import *  # noqa: F401,F403,E402

__all__ = (
    ["__version__", "allocator", "data", "inferers", "losses", "networks", "transforms"]
    + list(networks.__all__)
    + list(inferers.__all__)
    + list(data.__all__)
    + list(transforms.__all__)
    + list(losses.__all__)
)
