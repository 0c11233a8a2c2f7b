"""Dexatel's audiences, contacts, campaigns and templates: the typed client and the backend."""

from .backend import DexatelBackend
from .client import DexatelClient
from .wire import (
    CampaignStatus,
    DexatelAudience,
    DexatelCampaign,
    DexatelContact,
    DexatelTemplate,
    Messages,
    normalize_number,
)

__all__ = [
    "CampaignStatus",
    "DexatelAudience",
    "DexatelBackend",
    "DexatelCampaign",
    "DexatelClient",
    "DexatelContact",
    "DexatelTemplate",
    "Messages",
    "normalize_number",
]
