"""The dashboard's URLs under their former module name.

``include("dqadmin.dashboard_urls")`` keeps working for this release; use
``include("dqadmin.urls")``, the same patterns and namespace.
"""

import warnings

from dqadmin.urls import app_name, urlpatterns

__all__ = ["app_name", "urlpatterns"]

warnings.warn(
    "dqadmin.dashboard_urls is renamed dqadmin.urls; include('dqadmin.urls') instead "
    "(the old name goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)
