"""The module's long-lived resources, as one typed object the lifespan builds (app.py)."""

from __future__ import annotations

from dataclasses import dataclass

from scaimind.gateway.backend.client import CoordinatorClient
from scaimind.gateway.db.resources import CacheResources
from scaimind.gateway.metrics import ClusterFigures
from scaimind.gateway.security.apikeys import ApiKeyStore
from scaimind.gateway.security.auth import TokenVerifier
from scaimind.gateway.security.token_exchange import TokenExchange
from scaimind.gateway.streaming.resources import StreamResources
from scaimind.settings import Settings


@dataclass(eq=False)
class State:
    """Every resource of one running module; `app.state.scaimind` while the lifespan runs."""

    settings: Settings
    client: CoordinatorClient
    verifier: TokenVerifier
    cache: CacheResources
    api_keys: ApiKeyStore
    token_exchange: TokenExchange
    streams: StreamResources
    cluster_figures: ClusterFigures
