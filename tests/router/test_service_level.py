"""Service level arithmetic (pure), with hand-computed cases."""

from __future__ import annotations

from services.router.stats import ContactTimes, service_level
from services.router.strategy import ServiceLevel

TARGET = ServiceLevel(share=0.8, within_seconds=20)
NOW = 1000.0


def answered(after: float) -> ContactTimes:
    return ContactTimes(received_at=0.0, answered_at=after, abandoned_at=None, waiting=False)


def abandoned(after: float) -> ContactTimes:
    return ContactTimes(received_at=0.0, answered_at=None, abandoned_at=after, waiting=False)


def waiting(since: float) -> ContactTimes:
    return ContactTimes(received_at=NOW - since, answered_at=None, abandoned_at=None, waiting=True)


def test_mixed_window() -> None:
    rows = [answered(5), answered(19), answered(20), answered(21), abandoned(3), abandoned(40), waiting(25), waiting(5)]
    sl = service_level(rows, NOW, TARGET)
    # within: 5, 19, 20 (<= 20) -> 3; offered = 4 answered + 1 late abandon + 1 waiting past 20 s = 6
    assert sl["answered_within"] == 3 and sl["share"] == 0.5 and sl["meets_target"] is False
    assert sl["answered"] == 4 and sl["abandoned"] == 2
    assert sl["abandonment_rate"] == round(2 / 6, 4)


def test_early_abandons_do_not_count_against_the_target() -> None:
    sl = service_level([answered(1)] * 4 + [abandoned(2)] * 10, NOW, TARGET)
    assert sl["share"] == 1.0 and sl["meets_target"] is True and sl["abandonment_rate"] == round(10 / 14, 4)


def test_nothing_to_measure() -> None:
    sl = service_level([waiting(5)], NOW, TARGET)
    assert sl["share"] is None and sl["meets_target"] is None and sl["abandonment_rate"] is None


def test_both_operator_definitions() -> None:
    """SL1 = answered within / answered; SL2 = (answered within + abandoned within) / (answered + abandoned)."""
    rows = [answered(5), answered(19), answered(20), answered(21), abandoned(3), abandoned(40), waiting(25)]
    sl = service_level(rows, NOW, TARGET)
    assert sl["answered_share"] == 0.75 and sl["answered_share_meets_target"] is False  # 3 / 4
    assert sl["abandoned_within"] == 1
    assert sl["with_abandoned_share"] == round(4 / 6, 4) and sl["with_abandoned_share_meets_target"] is False
    quick_quitters = service_level([answered(1)] * 4 + [abandoned(2)] * 2, NOW, TARGET)
    assert quick_quitters["answered_share"] == 1.0 and quick_quitters["with_abandoned_share"] == 1.0
    late_quitters = service_level([answered(1)] * 4 + [abandoned(30)] * 4, NOW, TARGET)
    assert late_quitters["answered_share"] == 1.0 and late_quitters["with_abandoned_share"] == 0.5
    assert late_quitters["with_abandoned_share_meets_target"] is False


def test_no_answers_no_shares() -> None:
    sl = service_level([abandoned(3)], NOW, TARGET)
    assert sl["answered_share"] is None and sl["with_abandoned_share"] == 1.0
