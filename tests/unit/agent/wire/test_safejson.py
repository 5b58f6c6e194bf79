"""Deeply nested JSON from a peer is a 4xx-style refusal everywhere, never a RecursionError."""

from __future__ import annotations

import json

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from agent.client import answer_json
from agent.wire import safejson
from agent.wire.errors import WireError
from agent.wire.jws import AGENT_ALG, GRANT_TYP, verify_grant, verify_request
from agent.wire.keys import thumbprint

from ...helpers import b64url

DEEP = "[" * 5000 + "]" * 5000  # what the issue sent: json.loads raises RecursionError
URL = "/v1/enrollments"


def _nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert safejson.depth(b'{"a": "[[[[{{{", "b": [[1]]}') == 3
    assert safejson.depth(b'["\\"[[[[", []]') == 2  # an escaped quote does not end a string
    assert safejson.depth(b"42") == 0


def test_the_limit_itself_parses_one_more_level_is_refused() -> None:
    assert safejson.loads(_nested(safejson.MAX_DEPTH)) is not None
    with pytest.raises(safejson.TooDeep):
        safejson.loads(_nested(safejson.MAX_DEPTH + 1))


def test_too_deep_is_a_value_error_before_the_parser_recurses() -> None:
    with pytest.raises(RecursionError):
        json.loads(DEEP)  # the hazard this module exists for
    with pytest.raises(ValueError, match="deeper than"):
        safejson.loads(DEEP)


# UTF-16-LE, which json.loads would guess from the bytes: "∠" is 20 22 there, a quote to a
# scanner of bytes, so the brackets between two of them looked like a string's
DEEP_UTF16 = ('["∠",' + "[" * 1100 + '"∠"' + "]" * 1100 + "]").encode("utf-16-le")


def test_bytes_are_utf8_only_so_no_other_encoding_hides_the_depth() -> None:
    with pytest.raises(RecursionError):
        json.loads(DEEP_UTF16)  # what the parser alone makes of it
    with pytest.raises(ValueError):
        safejson.loads(DEEP_UTF16)
    assert safejson.loads('["∠", [1]]'.encode()) == ["∠", [1]]  # UTF-8 text parses


def _signed(key: OKPKey, header: str, payload: str | bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    return f"{signing_input}.{b64url(key.private_key.sign(signing_input.encode()))}"


@pytest.mark.parametrize("payload", [DEEP, DEEP_UTF16], ids=["utf8", "utf16"])
def test_signed_request_with_deep_payload_is_bad_payload(payload: str | bytes) -> None:
    key = OKPKey.generate_key("Ed25519")
    header = json.dumps({"alg": AGENT_ALG, "jwk": dict(key.as_dict(private=False)),
                         "nonce": "n", "url": URL})
    with pytest.raises(WireError) as err:
        verify_request(_signed(key, header, payload), URL)
    assert (err.value.code, err.value.status) == ("bad_payload", 400)


def test_signed_request_with_deep_header_is_bad_jws() -> None:
    # joserfc parses the header itself; its 512-byte header limit keeps that shallow.
    key = OKPKey.generate_key("Ed25519")
    header = '{"alg":"Ed25519","nonce":"n","url":"/v1/enrollments","x":' + DEEP + "}"
    with pytest.raises(WireError) as err:
        verify_request(_signed(key, header, "{}"), URL)
    assert (err.value.code, err.value.status) == ("bad_jws", 400)


def test_grant_with_deep_payload_is_bad_grant(ca) -> None:
    token = jws.serialize_compact({"alg": "ES256", "typ": GRANT_TYP}, DEEP, ca.signing_key)
    with pytest.raises(WireError) as err:
        verify_grant(token, ca.public_key, thumbprint(OKPKey.generate_key("Ed25519")), "pi-1")
    assert err.value.code == "bad_grant"


@pytest.mark.parametrize("body", [DEEP.encode(), b"[]", b"not json", b""])
def test_controller_answer_that_is_no_json_object_is_bad_answer(body: bytes) -> None:
    with pytest.raises(WireError) as err:
        answer_json(200, body, "https://ctl/v1/enrollments")
    assert (err.value.code, err.value.status) == ("bad_answer", 502)


def test_controller_answer_object_is_returned() -> None:
    assert answer_json(202, b'{"status": "pending"}', "x") == {"status": "pending"}
