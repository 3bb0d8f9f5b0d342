"""The event contract's own types."""

import pytest
from pydantic import BaseModel, EmailStr, ValidationError

from shared.events import Customer


class WithEmailStr(BaseModel):
    email: EmailStr


@pytest.mark.parametrize(
    "address",
    ["Ann.Lee@Example.COM", "  ann@example.com ", "Ann Lee <ann@example.com>", "ann@bücher.example"],
)
def test_a_customer_address_is_normalised_as_pydantic_emailstr_does(address):
    for _ in range(2):  # the second time comes from what the first remembered
        assert Customer(email=address).email == WithEmailStr(email=address).email


@pytest.mark.parametrize("address", ["not-an-address", "ann@", "ann@exa mple.com", "ann@example.com\r\nBcc: x@y.z"])
def test_a_wrong_address_is_refused_with_emailstr_s_message_every_time(address):
    with pytest.raises(ValidationError) as expected:
        WithEmailStr(email=address)
    for _ in range(2):  # a refusal is not remembered as a pass
        with pytest.raises(ValidationError) as refused:
            Customer(email=address)
        assert refused.value.errors()[0]["msg"] == expected.value.errors()[0]["msg"]


def test_the_schema_says_it_is_an_email_address():
    assert {"type": "string", "format": "email"} in Customer.model_json_schema()["properties"]["email"]["anyOf"]


def test_a_domain_that_passed_before_still_has_each_address_on_it_checked_whole():
    assert Customer(email="ann@example.com").email == "ann@example.com"

    for address in ("ann.@example.com", "ann..lee@example.com", "ann lee@example.com"):
        with pytest.raises(ValidationError) as expected:
            WithEmailStr(email=address)
        with pytest.raises(ValidationError) as refused:
            Customer(email=address)
        assert refused.value.errors()[0]["msg"] == expected.value.errors()[0]["msg"]
        assert "after the @-sign" not in refused.value.errors()[0]["msg"], "the local part is what is wrong"
