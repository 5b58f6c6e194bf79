"""Message schemas: RFC 1123 hostnames, enrollment requests, join reports, grants."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.wire.errors import WireError
from agent.wire.messages import (
    EnrollmentRequest,
    Grant,
    JoinedReport,
    SwarmState,
    validate_hardware_id,
    validate_hostname,
    validate_labels,
    validate_node_id,
)

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
STRICT_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)

L63 = "a" * 63
NAME_253 = ".".join([L63, L63, L63, "b" * 61])
NAME_254 = ".".join([L63, L63, L63, "b" * 62])


def test_length_fixtures() -> None:
    assert len(NAME_253) == 253 and len(NAME_254) == 254


@pytest.mark.parametrize("name", ["PiLike-03", "a", L63, "pi.local", "0", "9pi", "a-b-c",
                                  NAME_253, "xn--bcher-kva"])
def test_valid_hostnames(name: str) -> None:
    assert validate_hostname(name) == name


@pytest.mark.parametrize("name", [
    "-a", "a-", "a_b", "a" * 64, "pï", "", NAME_254, "a..b", ".a", "a.", "a b", "pi/1",
    "a.-b", "a." + "b" * 64,
])
def test_invalid_hostnames(name: str) -> None:
    with pytest.raises(WireError) as err:
        validate_hostname(name)
    assert err.value.code == "bad_hostname"
    assert err.value.status == 400


@pytest.mark.parametrize("name", [
    "pi\n",  # `$` also matches before a final newline
    "a.b\n",
    "\u212a",  # KELVIN SIGN: matches [a-z] under re.IGNORECASE in Unicode mode
    "p\u0131",  # LATIN SMALL LETTER DOTLESS I
    "\u017fpi",  # LATIN SMALL LETTER LONG S
    "\u0130",  # LATIN CAPITAL LETTER I WITH DOT ABOVE
])
def test_hostname_trailing_newline_and_unicode_case_folds_refused(name: str) -> None:
    with pytest.raises(WireError):
        validate_hostname(name)


@pytest.mark.parametrize(("check", "value"), [
    (validate_hardware_id, "00000000a1b2c3d4\n"),
    (validate_node_id, "a" * 25 + "\n"),
    (validate_labels, {"zone\n": "lab"}),
    (validate_labels, {"zone": "lab\n"}),
    (lambda v: EnrollmentRequest.from_json({"hostname": "pi", "hardware_id": "hw", "arch": v}),
     "armv7l\n"),
], ids=["hardware_id", "node_id", "label_key", "label_value", "arch_text"])
def test_validators_refuse_trailing_newline(check: Any, value: Any) -> None:
    # `^...$` with re.match lets one "\n" through at the end; fullmatch or \Z does not.
    with pytest.raises(WireError):
        check(value)


@pytest.mark.parametrize("value", [None, 5, ["pi"], {"h": "pi"}, b"pi", True])
def test_hostname_must_be_a_string(value: Any) -> None:
    with pytest.raises(WireError):
        validate_hostname(value)


_HOSTNAMES = st.one_of(st.text(max_size=300),
                      st.from_regex(r"[a-zA-Z0-9.\-_]{0,70}", fullmatch=True))


@FUZZ
@given(st.one_of(_HOSTNAMES, st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)))
def test_fuzz_validate_hostname_raises_only_wire_error(value: Any) -> None:
    with contextlib.suppress(WireError):
        validate_hostname(value)


@FUZZ
@given(_HOSTNAMES)
@example("\u212a")
@example("pi\n")
def test_fuzz_accepted_hostnames_are_plain_ascii_rfc1123(value: str) -> None:
    try:
        accepted = validate_hostname(value)
    except WireError:
        return
    assert len(accepted) <= 253
    assert all(STRICT_LABEL.fullmatch(label) for label in accepted.split("."))


@pytest.mark.parametrize("value", ["00000000a1b2c3d4", "a", "abc:def_1.2-3", "x" * 64])
def test_valid_hardware_ids(value: str) -> None:
    assert validate_hardware_id(value) == value


@pytest.mark.parametrize("value", ["", "-abc", "x" * 65, "a b", "é", None, 5])
def test_invalid_hardware_ids(value: Any) -> None:
    with pytest.raises(WireError) as err:
        validate_hardware_id(value)
    assert err.value.code == "bad_hardware_id"


def test_node_id() -> None:
    assert validate_node_id("a" * 25) == "a" * 25
    for bad in ("a" * 24, "a" * 26, "A" * 25, "a" * 24 + "-", None):
        with pytest.raises(WireError):
            validate_node_id(bad)


def test_labels() -> None:
    assert validate_labels({"pi.model": "3b", "a/b": ""}) == {"pi.model": "3b", "a/b": ""}
    assert validate_labels(None) == {}
    for bad in ("x", {"": "v"}, {"k": 1}, {"k": "v" * 257}, {f"k{i}": "v" for i in range(33)},
                {"-k": "v"}, {"k": "tab\t"}):
        with pytest.raises(WireError) as err:
            validate_labels(bad)
        assert err.value.code == "bad_labels"


# -- enrollment requests -----------------------------------------------------------------

GOOD = {
    "hostname": "PiLike-03", "hardware_id": "00000000a1b2c3d4", "arch": "armv7l",
    "model": "Raspberry Pi 3 Model B Rev 1.2", "addresses": ["10.0.0.21", "fe80::1"],
    "docker_version": "27.3.1", "agent_version": "0.1.0", "bootstrap_token": "seb_x",
    "swarm": {"node_id": "a" * 25, "state": "active", "manager": False, "cluster_id": "c"},
    "local_proof": "p" * 43,
}


def test_enrollment_request_round_trip() -> None:
    req = EnrollmentRequest.from_json(GOOD)
    assert req.to_json() == GOOD
    assert EnrollmentRequest.from_json(req.to_json()) == req
    assert req.swarm == SwarmState("a" * 25, "active", False, "c")


def test_enrollment_request_minimal() -> None:
    req = EnrollmentRequest.from_json({"hostname": "pi", "hardware_id": "hw1"})
    assert req.addresses == [] and req.swarm == SwarmState() and req.bootstrap_token == ""


def test_enrollment_request_unknown_field_named() -> None:
    with pytest.raises(WireError) as err:
        EnrollmentRequest.from_json({**GOOD, "role": "manager"})
    assert err.value.code == "bad_payload"
    assert "role" in err.value.message


@pytest.mark.parametrize(("field", "value", "code"), [
    ("hostname", "bad_host", "bad_hostname"),
    ("hardware_id", "", "bad_hardware_id"),
    ("arch", "x" * 33, "bad_arch"),
    ("model", "tab\tbed", "bad_model"),
    ("addresses", ["10.0.0.300"], "bad_addresses"),
    ("addresses", "10.0.0.1", "bad_addresses"),
    ("addresses", ["10.0.0.1"] * 17, "bad_addresses"),
    ("docker_version", 27, "bad_docker_version"),
    ("bootstrap_token", "x" * 129, "bad_bootstrap_token"),
    ("swarm", {"node_id": "short"}, "bad_node_id"),
    ("swarm", {"extra": 1}, "bad_payload"),
])
def test_enrollment_request_field_errors(field: str, value: Any, code: str) -> None:
    with pytest.raises(WireError) as err:
        EnrollmentRequest.from_json({**GOOD, field: value})
    assert err.value.code == code


@pytest.mark.parametrize("value", [None, [], "x", 5, [GOOD]])
def test_enrollment_request_must_be_object(value: Any) -> None:
    with pytest.raises(WireError) as err:
        EnrollmentRequest.from_json(value)
    assert err.value.code == "bad_payload"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_FIELDS = [*EnrollmentRequest.__dataclass_fields__, "extra"]


@FUZZ
@given(st.one_of(
    _JSON,
    st.fixed_dictionaries({}, optional={k: _JSON for k in _FIELDS}),
    st.fixed_dictionaries({"hostname": st.just("pi"), "hardware_id": st.just("hw1")},
                          optional={k: _JSON for k in _FIELDS[2:]}),
    st.fixed_dictionaries({"hostname": st.just("pi"), "hardware_id": st.just("hw1"),
                           "swarm": st.fixed_dictionaries(
                               {}, optional={k: _JSON for k in SwarmState.__dataclass_fields__})}),
))
def test_fuzz_enrollment_request_raises_only_wire_error(value: Any) -> None:
    with contextlib.suppress(WireError):
        EnrollmentRequest.from_json(value)


def test_joined_report() -> None:
    assert JoinedReport.from_json({"node_id": "b" * 25}).node_id == "b" * 25
    for bad in ({}, {"node_id": "x"}, {"node_id": "b" * 25, "more": 1}, None):
        with pytest.raises(WireError):
            JoinedReport.from_json(bad)


def test_grant_from_json_missing_claims() -> None:
    with pytest.raises(WireError) as err:
        Grant.from_json({"hostname": "pi"})
    assert err.value.code == "bad_grant"
