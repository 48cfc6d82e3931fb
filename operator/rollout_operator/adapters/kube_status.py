"""Status writer on the Kubernetes API: a merge patch of the status subresource with a precondition.

The patch carries metadata.resourceVersion, so the API server refuses it (409) if anything changed
since the read the decision was based on; the next tick decides again on fresh data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .kube import MODEL_ROLLOUTS, KubeApi, KubeError


class KubeStatusWriter:
    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def patch_status(self, namespace: str, name: str, resource_version: str, patch: Mapping[str, Any]) -> bool:
        """True when written; False on a conflict (stale read) or if the object is gone."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(patch)}
        try:
            self._api.patch(MODEL_ROLLOUTS, namespace, name, body, sub="status")
        except KubeError as err:
            if err.conflict or err.not_found:
                return False
            raise
        return True
