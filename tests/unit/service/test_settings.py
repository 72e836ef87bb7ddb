"""Settings cross-checks."""

import pytest

from service.settings import Settings


def test_the_network_allowance_must_leave_the_default_budget_something() -> None:
    with pytest.raises(ValueError, match="network_ms"):
        Settings(network_ms=1000, default_budget_ms=1000)
