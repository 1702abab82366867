import pytest

from appliance.errors import InsufficientCredits
from appliance.store import ledger, users
from appliance.store.db import open_db


@pytest.fixture
def db(tmp_path):
    return open_db(tmp_path / "appliance.db")


@pytest.fixture
def user(db):
    u = users.create_user(db, "ada")
    ledger.grant(db, u["id"], 15, bucket="free")
    ledger.grant(db, u["id"], 100, bucket="paid")
    return u["id"]


def test_reserve_spends_free_credits_first(db, user):
    ledger.reserve(db, user, "job1", 10)
    assert ledger.balance(db, user) == {"paid": 100, "free": 5, "total": 105}
    ledger.reserve(db, user, "job2", 10)
    assert ledger.balance(db, user) == {"paid": 95, "free": 0, "total": 95}


def test_settle_refunds_the_unused_reserve_and_charges_the_cost(db, user):
    ledger.reserve(db, user, "job1", 10)
    assert ledger.settle(db, user, "job1", 3)
    assert ledger.balance(db, user)["total"] == 112
    assert ledger.charged(db, "job1") == 3
    assert not ledger.is_open(db, "job1")


def test_cost_above_the_reserve_charges_the_difference(db, user):
    ledger.reserve(db, user, "job1", 10)
    assert ledger.settle(db, user, "job1", 40)
    assert ledger.balance(db, user)["total"] == 75


def test_cost_above_the_balance_fails_and_refunds_the_reserve(db, user):
    ledger.reserve(db, user, "job1", 10)
    assert not ledger.settle(db, user, "job1", 500)
    assert ledger.balance(db, user)["total"] == 115
    assert ledger.charged(db, "job1") == 0
    assert ledger.open_reservations(db) == []


def test_refund_closes_the_reservation_once(db, user):
    ledger.reserve(db, user, "job1", 10)
    assert ledger.open_reservations(db) == ["job1"]
    ledger.refund(db, user, "job1")
    ledger.refund(db, user, "job1")
    assert ledger.balance(db, user)["total"] == 115
    assert ledger.open_reservations(db) == []


def test_reserve_above_the_balance_is_refused(db, user):
    with pytest.raises(InsufficientCredits):
        ledger.reserve(db, user, "job1", 1000)
    assert ledger.balance(db, user)["total"] == 115


def test_cost_is_rounded_up_per_render_second():
    assert ledger.cost_for(18420, 2.3) == 43
    assert ledger.cost_for(1, 1.0) == 1
