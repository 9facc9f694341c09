"""The service's endpoints, one :class:`fastapi.APIRouter` per area: ``verify`` (1:1 on two
images), ``gallery`` (identities: verify, identify, enrol, list, delete), ``feedback``
(reported mistakes) and ``ops`` (health, metrics)."""

from __future__ import annotations
