"""A fractional degradation level: its two quality caps spread over requests."""

from service.runtime import Runtime
from service.settings import Settings


def test_a_fractional_level_spreads_its_two_caps_over_requests() -> None:
    runtime = Runtime(Settings())
    runtime.level = 2.25  # a quarter at cap 3, three quarters at cap 2
    caps = [runtime._cap() for _ in range(100)]
    assert caps.count(2) == 75 and caps.count(3) == 25 and caps[:4] == [3, 2, 2, 2]
    runtime.level = 4.0
    assert {runtime._cap() for _ in range(10)} == {4}
