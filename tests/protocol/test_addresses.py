"""RFC 5321 §4.1.2 paths: what parses, what the final mailbox is, what is refused."""
import pytest

from mailappliance.protocol.addresses import Address, AddressError, parse_mailbox, parse_params, parse_path


def test_plain_path_with_params():
    address, params = parse_path("FROM:<Bob@Example.COM> SIZE=1000 BODY=8BITMIME", "FROM", allow_null=True)
    assert address == Address("Bob", "example.com")
    assert params == {"SIZE": "1000", "BODY": "8BITMIME"}


def test_null_reverse_path():
    assert parse_path("FROM:<>", "FROM", allow_null=True) == (None, {})
    with pytest.raises(AddressError):
        parse_path("TO:<>", "TO", allow_null=False)


def test_space_after_colon_is_tolerated():
    address, _ = parse_path("TO: <a@b.example>", "TO", allow_null=False)
    assert address.address == "a@b.example"


def test_source_route_is_ignored_final_mailbox_decides():
    address, _ = parse_path("TO:<@example.com,@relay.example:victim@evil.example>", "TO", allow_null=False)
    assert address == Address("victim", "evil.example")


def test_quoted_local_part_keeps_the_at_sign_inside():
    address, _ = parse_path('TO:<"user@evil.example"@example.com>', "TO", allow_null=False)
    assert address.domain == "example.com"
    assert address.local == '"user@evil.example"'


def test_percent_hack_stays_a_local_part():
    address, _ = parse_path("TO:<user%evil.example@example.com>", "TO", allow_null=False)
    assert address == Address("user%evil.example", "example.com")


@pytest.mark.parametrize(
    "text",
    [
        "user@evil.example@example.com",
        "user",
        "@example.com",
        "user@",
        "us er@example.com",
        "user@-bad-.example",
        "user..dots@example.com",
        "a" * 65 + "@example.com",
    ],
)
def test_bad_mailboxes(text):
    with pytest.raises(AddressError):
        parse_mailbox(text)


def test_address_literal():
    assert parse_mailbox("root@[127.0.0.1]").is_address_literal


def test_utf8_address_is_not_ascii():
    address = parse_mailbox("jörg@bücher.example")
    assert not address.is_ascii


@pytest.mark.parametrize("argument", ["FROM:<a@b.example", "FROM:a@b.example>", "FROM:<a@b.example>junk", "TO:<a@b.example>"])
def test_bad_paths(argument):
    with pytest.raises(AddressError):
        parse_path(argument, "FROM", allow_null=True)


def test_params():
    assert parse_params(" SMTPUTF8  SIZE=10 ") == {"SMTPUTF8": None, "SIZE": "10"}
    with pytest.raises(AddressError):
        parse_params("SIZE=")
    with pytest.raises(AddressError):
        parse_params("=x")
