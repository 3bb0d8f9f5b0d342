"""`combined_update`: two updates of one document, queued in one transaction, sent as one when that is the same."""

import pytest

from shared.mongo import combined_update


def test_later_sets_override_and_increments_add_up():
    earlier = {"$set": {"assignee_id": "ada", "updated_ms": 1}, "$inc": {"created": 1}}
    later = {"$set": {"updated_ms": 2, "held": []}, "$inc": {"created": 1, "assigned": 1}}

    assert combined_update(earlier, later) == {
        "$set": {"assignee_id": "ada", "updated_ms": 2, "held": []},
        "$inc": {"created": 2, "assigned": 1},
    }


def test_only_the_first_upsert_can_insert_so_only_its_set_on_insert_stays():
    earlier = {"$inc": {"n": 1}, "$setOnInsert": {"bucket_ms": 0, "channel": "email"}}
    later = {"$inc": {"n": 1}, "$setOnInsert": {"bucket_ms": 99}}

    assert combined_update(earlier, later) == {"$inc": {"n": 2}, "$setOnInsert": {"bucket_ms": 0, "channel": "email"}}


def test_a_later_set_of_a_field_the_first_would_insert_wins_either_way():
    assert combined_update({"$setOnInsert": {"created_ms": 1}}, {"$set": {"created_ms": 2}}) == {"$set": {"created_ms": 2}}


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"$set": {"a": 1}}, {"$inc": {"a": 1}}),
        ({"$inc": {"a": 1}}, {"$set": {"a": 5}}),
        ({"$set": {"a": {"b": 1}}}, {"$set": {"a.b": 2}}),
        ({"$set": {"a.b": 1}}, {"$set": {"a": {}}}),
        ({"$set": {"a": 1}}, {"$unset": {"b": ""}}),
        ({"$push": {"a": 1}}, {"$set": {"b": 1}}),
    ],
    ids=["set-then-inc", "inc-then-set", "path-inside-a-set-path", "set-path-inside-a-later-one", "unset", "push"],
)
def test_updates_that_would_not_be_one_update_stay_apart(earlier, later):
    assert combined_update(earlier, later) is None


def test_the_queued_update_is_left_as_it_was():
    earlier = {"$set": {"a": 1}, "$inc": {"n": 1}}
    combined_update(earlier, {"$set": {"a": 2}, "$inc": {"n": 1}})

    assert earlier == {"$set": {"a": 1}, "$inc": {"n": 1}}
