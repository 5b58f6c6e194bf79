"""Parsing avahi-browse's parsable output: untrusted LAN input, bounded and defensive."""

from __future__ import annotations

import random

from agent.avahibrowse import (
    MAX_ADDRESSES,
    MAX_INSTANCES,
    MAX_OUTPUT,
    Resolved,
    parse_browse,
    parse_txt,
    unescape_label,
)

T = "_swarm-enroll._tcp"
PIN = "sha256:" + "ab" * 32
TXT = f'"v=1" "ca={PIN}" "cluster=abcdefabcdef"'


def line(event: str, name: str, rest: str = "", iface: str = "eth0", proto: str = "IPv4",
         service: str = T) -> str:
    return f"{event};{iface};{proto};{name};{service};local{rest}"


def resolved(name: str, addr: str = "198.18.0.11", port: str = "8443", txt: str = TXT,
             **kw: str) -> str:
    return line("=", name, f";{name}.local;{addr};{port};{txt}", **kw)


def out(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_resolved_instance_with_txt() -> None:
    seen = parse_browse(out(line("+", "PiLike-01"), resolved("PiLike-01")), T)
    assert seen == {"PiLike-01": Resolved({"v": "1", "ca": PIN, "cluster": "abcdefabcdef"},
                                          ("198.18.0.11",), 8443)}


def test_escaped_names_are_unescaped() -> None:
    seen = parse_browse(out(resolved(r"My\032Pi\.\\x\059y")), T)
    assert list(seen) == ["My Pi.\\x;y"]
    assert unescape_label(r"caf\195\169") == "café"


def test_malformed_names_are_dropped() -> None:
    for bad in ("", "a\\", r"\256x", r"\255", r"a\010b", "x" * 64, r"\000"):
        assert unescape_label(bad) is None, bad
    assert parse_browse(out(resolved(r"a\010b"), resolved("")), T) == {}


def test_seen_but_unresolved_is_none() -> None:
    assert parse_browse(out(line("+", "PiLike-02")), T) == {"PiLike-02": None}


def test_removed_and_other_types_ignored() -> None:
    seen = parse_browse(out(line("-", "gone"), resolved("other", service="_http._tcp"),
                            line("+", "x", service="_swarm-node._tcp")), T)
    assert seen == {}


def test_addresses_gathered_over_interfaces_and_bounded() -> None:
    lines = [resolved("ctl", addr=f"198.18.0.{i}", iface=f"eth{i}") for i in range(1, 20)]
    lines.append(resolved("ctl", addr="198.18.0.1", iface="wlan0"))  # same address again
    got = parse_browse(out(*lines), T)["ctl"]
    assert got is not None
    assert got.addresses == tuple(f"198.18.0.{i}" for i in range(1, MAX_ADDRESSES + 1))
    assert got.txt["ca"] == PIN  # the first resolution's TXT


def test_bad_addresses_and_ports_dropped() -> None:
    for addr, port in [("not-an-ip", "8443"), ("fe80::1", "8443"), ("224.0.0.251", "8443"),
                       ("0.0.0.0", "8443"), ("198.18.0.1", "0"), ("198.18.0.1", "70000"),
                       ("198.18.0.1", "-1"), ("198.18.0.1", "\uff18\uff14\uff14\uff13"),
                       ("198.18.0.1", "")]:
        assert parse_browse(out(resolved("ctl", addr=addr, port=port)), T) == {"ctl": None}
    assert parse_browse(out(resolved("ctl", addr="2001:db8::1")), T)["ctl"] == Resolved(
        {"v": "1", "ca": PIN, "cluster": "abcdefabcdef"}, ("2001:db8::1",), 8443)


def test_txt_parsing() -> None:
    assert parse_txt('"a=1" "b=" "c" "=x" "a=2"') == {"a": "1", "b": "", "c": ""}
    assert parse_txt("") == {}
    assert parse_txt("no quotes") == {}
    assert parse_txt('"k=v;w"') == {"k": "v;w"}  # raw ; in a TXT value is kept whole
    assert parse_txt('"k=\x01"') == {}  # not printable: dropped
    assert parse_txt('"k=' + "x" * 101 + '"') == {}  # too long a value
    assert len(parse_txt(" ".join(f'"k{i}=v"' for i in range(100)))) == 32


def test_txt_with_semicolons_and_quotes_stays_in_its_field() -> None:
    seen = parse_browse(out(resolved("ctl", txt='"v=1" "ca=a;b;c" "x=\\"y\\""')), T)
    got = seen["ctl"]
    assert got is not None and got.port == 8443 and got.txt["ca"] == "a;b;c"


def test_a_forged_line_inside_a_txt_value_gains_nothing_new() -> None:
    # avahi prints TXT raw: a newline in a value starts a "line" of the sender's choosing;
    # it can only say what that sender could announce anyway, and nothing crashes
    evil = resolved("evil", txt='"v=1" "x=\n' + resolved("forged", addr="198.18.0.66") + '"')
    seen = parse_browse(out(evil), T)
    assert set(seen) == {"evil", "forged"}


def test_instances_bounded() -> None:
    lines = [resolved(f"pi{i}") for i in range(MAX_INSTANCES + 50)]
    assert len(parse_browse(out(*lines), T)) == MAX_INSTANCES


def test_output_and_lines_bounded() -> None:
    long_line = resolved("long", txt='"v=' + "x" * 5000 + '"')
    assert parse_browse(out(long_line), T) == {}
    big = out(*([resolved("a")] * 10)) + b"x" * MAX_OUTPUT + out(resolved("late"))
    assert "late" not in parse_browse(big, T)


def test_fuzz_never_raises_and_results_are_sane() -> None:
    rng = random.Random(1234)
    alphabet = ['"', ";", "\\", "=", " ", "\n", "+", "-", "0", "9", "1", "a", "é", "\x00",
                "\xff", ".", T, "198.18.0.1", "8443", "fe80::1"]
    base = out(line("+", "PiLike-01"), resolved("PiLike-01")).decode()
    for _ in range(3000):
        chars = list(base)
        for _ in range(rng.randint(1, 12)):
            pos = rng.randrange(len(chars) + 1)
            if rng.random() < 0.5 and chars:
                del chars[min(pos, len(chars) - 1)]
            else:
                chars.insert(pos, rng.choice(alphabet))
        raw = "".join(chars).encode("utf-8", "surrogateescape")
        if rng.random() < 0.2:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(200))) + raw
        for name, got in parse_browse(raw, T).items():
            assert 0 < len(name.encode()) <= 63 and name.isprintable()
            if got is not None:
                assert 0 < got.port < 65536 and 0 < len(got.addresses) <= MAX_ADDRESSES
                assert all(k.isascii() and v.isascii() for k, v in got.txt.items())
