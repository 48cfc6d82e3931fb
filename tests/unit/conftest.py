"""Fixtures shared by the speech-server test modules: each module defines its own `app` (the
server built with the limits it tests); `client` talks to that app in-process."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.support.speech_fixtures import synthesize_word


@pytest.fixture
async def client(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://speech") as c:
        yield c


@pytest.fixture(scope="module")
def word() -> np.ndarray:
    return synthesize_word("yes")
