"""The agent's output budget: counted, refused when a reservation does not fit, and the
sessions stopped for it resumed in order once there is room."""

from __future__ import annotations

import pytest

from tuxio.nodeagent.budget import OutputBudget
from tuxio.nodeagent.errors import OutputBudgetExhausted


def test_taking_past_the_total_spends_it_and_giving_back_resumes_in_order() -> None:
    budget = OutputBudget(100)
    resumed: list[str] = []
    budget.take(60)
    assert not budget.spent
    budget.take(50)  # one read may go past the total
    assert budget.spent and budget.used == 110
    budget.wait("a", lambda: resumed.append("a"))
    budget.wait("b", lambda: resumed.append("b"))
    budget.give(5)
    assert resumed == []  # still spent: nobody resumes
    budget.give(10)
    assert resumed == ["a", "b"]
    assert budget.used == 95


def test_a_resumed_session_that_spends_it_again_stops_the_others() -> None:
    budget = OutputBudget(100)
    budget.take(100)
    resumed: list[str] = []

    def first() -> None:
        resumed.append("a")
        budget.take(50)  # it reads at once, and spends the budget again

    budget.wait("a", first)
    budget.wait("b", lambda: resumed.append("b"))
    budget.give(40)
    assert resumed == ["a"]
    budget.forget("b")
    budget.give(100)
    assert resumed == ["a"]  # forgotten (its session ended): not called


def test_a_reservation_that_does_not_fit_is_refused_and_one_that_fits_is_returned() -> None:
    budget = OutputBudget(100)
    budget.take(30)
    refused = budget.reserve(80, "this exec")
    with pytest.raises(OutputBudgetExhausted, match="output_budget_bytes, 100"):
        refused.__enter__()
    assert budget.used == 30
    with budget.reserve(70, "this exec"):
        assert budget.used == 100
    assert budget.used == 30
    with pytest.raises(ValueError, match="positive"):
        OutputBudget(0)
