"""The HubSpot sink: change events written to HubSpot CRM objects through the batch APIs."""

from tidesync.sinks.hubspot.config import HubSpotSinkConfig
from tidesync.sinks.hubspot.sink import HubSpotSink

__all__ = ["HubSpotSink", "HubSpotSinkConfig"]
