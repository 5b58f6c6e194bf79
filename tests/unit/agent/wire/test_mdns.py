"""DNS-SD TXT records: parsed defensively, since any host on the LAN can send them."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.wire.errors import WireError
from agent.wire.mdns import ControllerAd, NodeAd, decode_txt

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
PIN = "sha256:" + "ab" * 32


def _txt(d: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in d.items()}


def test_decode_txt_keeps_printable_ascii() -> None:
    props = {b"v": b"1", b"ca": PIN.encode(), b"empty": None, b"bin": b"\xff\x00",
             b"\xffkey": b"x", b"ctl": b"a\nb", b"long": b"x" * 101, b"k" * 17: b"v"}
    assert decode_txt(props) == {"v": "1", "ca": PIN, "empty": ""}


def test_controller_ad_round_trip() -> None:
    ad = ControllerAd(PIN, "abcdefghijklmnop", ("10.0.0.1", "fe80::1"), 8443)
    assert ad.txt() == {"v": "1", "ca": PIN, "cluster": "abcdefghijkl"}
    parsed = ControllerAd.parse(decode_txt(_txt(ad.txt())), list(ad.addresses), 8443)
    assert parsed.pin == PIN and parsed.cluster == "abcdefghijkl"
    assert parsed.urls() == ["https://10.0.0.1:8443", "https://[fe80::1]:8443"]


@pytest.mark.parametrize(("txt", "addresses", "port"), [
    ({"v": "2", "ca": PIN}, ["10.0.0.1"], 8443),
    ({"ca": PIN}, ["10.0.0.1"], 8443),
    ({"v": "1", "ca": "sha256:nothex"}, ["10.0.0.1"], 8443),
    ({"v": "1"}, ["10.0.0.1"], 8443),
    ({"v": "1", "ca": PIN}, [], 8443),
    ({"v": "1", "ca": PIN}, ["10.0.0.1"], 0),
    ({"v": "1", "ca": PIN}, ["10.0.0.1"], 65536),
])
def test_controller_ad_refused(txt: dict[str, str], addresses: list[str], port: int) -> None:
    with pytest.raises(WireError):
        ControllerAd.parse(txt, addresses, port)


def test_node_ad_round_trip() -> None:
    ad = NodeAd("PiLike-03", "00000000a1b2c3d4", "kPrK_qmx", "pending", "worker", "armv7l")
    assert NodeAd.parse("PiLike-03", decode_txt(_txt(ad.txt()))) == ad


def test_node_ad_txt_holds_no_secret_fields() -> None:
    ad = NodeAd("pi", "hw", "id", "new")
    assert set(ad.txt()) == {"v", "hw", "id", "state", "role", "arch"}


@pytest.mark.parametrize(("instance", "txt"), [
    ("pi", {"v": "2", "state": "new"}),
    ("pi", {"v": "1", "state": "hacked"}),
    ("pi", {"v": "1"}),
    ("bad_name", {"v": "1", "state": "new"}),
    ("", {"v": "1", "state": "new"}),
])
def test_node_ad_refused(instance: str, txt: dict[str, str]) -> None:
    with pytest.raises(WireError):
        NodeAd.parse(instance, txt)


def test_node_ad_truncates_long_values() -> None:
    ad = NodeAd.parse("pi", {"v": "1", "state": "new", "hw": "h" * 100, "role": "r" * 100})
    assert len(ad.hardware_id) == 64 and len(ad.role) == 16


_PROPS = st.dictionaries(st.binary(max_size=20), st.none() | st.binary(max_size=120), max_size=8)
_WITH_V = _PROPS.map(lambda d: {**d, b"v": b"1"})
_WITH_STATE = _WITH_V.map(lambda d: {**d, b"state": b"new"})


@FUZZ
@given(props=st.one_of(_PROPS, _WITH_V, _WITH_STATE), instance=st.binary(max_size=80),
       addresses=st.lists(st.text(max_size=40), max_size=3), port=st.integers())
@example(props={b"v": b"1", b"ca": ("sha256:" + "0" * 64).encode()}, instance=b"pi",
         addresses=["10.0.0.1"], port=8443)
def test_fuzz_mdns_parsers_raise_only_wire_error(props: dict[bytes, bytes | None],
                                                 instance: bytes, addresses: list[str],
                                                 port: int) -> None:
    txt = decode_txt(props)  # must never raise: it only drops what it cannot use
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in txt.items())
    name = instance.decode("utf-8", "replace")
    with contextlib.suppress(WireError):
        NodeAd.parse(name, txt)
    with contextlib.suppress(WireError):
        ControllerAd.parse(txt, addresses, port)
