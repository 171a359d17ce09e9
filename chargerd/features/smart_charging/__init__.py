"""Smart Charging (OCPP 1.6 profile): charging profiles that drive the pilot's current.

- model.py: a profile as a checked, immutable value (from the wire or the store);
- composite.py: the composite schedule and the split of a station limit, pure functions;
- store.py: the profiles in SQLite;
- service.py: the OCPP handlers, the configuration keys and the timer that applies limits.
"""

from chargerd.features.smart_charging.composite import Electrical, composite_schedule, limit_at
from chargerd.features.smart_charging.model import ProfileRejected, parse_profile
from chargerd.features.smart_charging.service import (
    SmartChargingService,
    declare_smart_charging_keys,
)

__all__ = [
    "Electrical",
    "ProfileRejected",
    "SmartChargingService",
    "composite_schedule",
    "declare_smart_charging_keys",
    "limit_at",
    "parse_profile",
]
