"""ControllerFinder: only controllers holding our CA, in an order that fails over."""

from __future__ import annotations

from agent.discovery import MAX_ADS, ControllerFinder

PIN = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def _txt(pin: str = PIN, v: str = "1", cluster: str = "abcdefabcdef") -> dict[str, str]:
    return {"v": v, "ca": pin, "cluster": cluster}


def test_keeps_controller_with_our_pin() -> None:
    finder = ControllerFinder(PIN)
    finder.found("ctl-1._swarm-enroll._tcp.local.", _txt(), ["10.0.0.1"], 8443)
    assert finder.urls() == ["https://10.0.0.1:8443"]
    assert finder.changed.is_set()


def test_ignores_controller_with_another_pin() -> None:
    finder = ControllerFinder(PIN)
    finder.found("evil._swarm-enroll._tcp.local.", _txt(OTHER), ["10.0.0.66"], 8443)
    assert finder.urls() == []
    assert not finder.changed.is_set()


def test_ignores_bad_txt() -> None:
    finder = ControllerFinder(PIN)
    finder.found("a", _txt(v="2"), ["10.0.0.2"], 8443)
    finder.found("b", {"v": "1", "ca": "garbage"}, ["10.0.0.3"], 8443)
    finder.found("c", {}, ["10.0.0.4"], 8443)
    finder.found("d", _txt(), [], 8443)
    finder.found("e", _txt(), ["10.0.0.5"], 0)
    assert finder.urls() == []


def test_keeps_ours_among_others() -> None:
    finder = ControllerFinder(PIN)
    finder.found("evil", _txt(OTHER), ["10.0.0.66"], 8443)
    finder.found("ctl-1", _txt(), ["10.0.0.1"], 8443)
    finder.found("broken", _txt(v="9"), ["10.0.0.7"], 8443)
    assert finder.urls() == ["https://10.0.0.1:8443"]


def test_rotate_fails_over_between_controllers() -> None:
    finder = ControllerFinder(PIN)
    finder.found("ctl-1", _txt(), ["10.0.0.1"], 8443)
    finder.found("ctl-2", _txt(), ["10.0.0.2"], 8443)
    assert finder.urls()[0] == "https://10.0.0.1:8443"
    finder.rotate()
    assert finder.urls() == ["https://10.0.0.2:8443", "https://10.0.0.1:8443"]
    finder.rotate()
    assert finder.urls()[0] == "https://10.0.0.1:8443"


def test_rotate_with_one_controller_keeps_it() -> None:
    finder = ControllerFinder(PIN)
    finder.found("ctl-1", _txt(), ["10.0.0.1"], 8443)
    finder.rotate()
    assert finder.urls() == ["https://10.0.0.1:8443"]


def test_reannounce_updates_without_duplicating() -> None:
    finder = ControllerFinder(PIN)
    finder.found("ctl-1", _txt(), ["10.0.0.1"], 8443)
    finder.found("ctl-1", _txt(), ["10.0.0.9"], 9443)
    assert finder.urls() == ["https://10.0.0.9:9443"]


def test_gone_removes_controller() -> None:
    finder = ControllerFinder(PIN)
    finder.found("ctl-1", _txt(), ["10.0.0.1"], 8443)
    finder.found("ctl-2", _txt(), ["10.0.0.2"], 8443)
    finder.gone("ctl-1")
    finder.gone("never-seen")
    assert finder.urls() == ["https://10.0.0.2:8443"]


def test_ipv6_urls_bracketed() -> None:
    finder = ControllerFinder(PIN)
    finder.found("ctl-1", _txt(), ["fd00::1"], 8443)
    assert finder.urls() == ["https://[fd00::1]:8443"]


def test_static_url_skips_mdns() -> None:
    finder = ControllerFinder(PIN, static_url="https://10.0.0.1:8443")
    finder.found("ctl-2", _txt(), ["10.0.0.2"], 8443)
    assert finder.urls() == ["https://10.0.0.1:8443"]


def test_tofu_accepts_any_pin() -> None:
    finder = ControllerFinder(None)
    finder.found("ctl-x", _txt(OTHER), ["10.0.0.3"], 8443)
    assert finder.urls() == ["https://10.0.0.3:8443"]


def test_controllers_an_answer_named_are_tried_before_the_announced_ones() -> None:
    """An announcement is anyone's (the pin is public); a pinned answer is not."""
    finder = ControllerFinder(PIN)
    assert finder.learn(["https://10.0.0.2:8443", "https://10.0.0.3:8443"])
    assert not finder.learn(["https://10.0.0.2:8443", "https://10.0.0.3:8443"])  # no news
    finder.found("ctl-3", _txt(), ["10.0.0.3"], 8443)
    finder.found("ctl-x", _txt(), ["10.0.0.66"], 8443)  # a stranger, with our pin
    assert finder.urls() == ["https://10.0.0.2:8443", "https://10.0.0.3:8443",
                             "https://10.0.0.66:8443"]
    finder.rotate()  # 10.0.0.2 stopped answering
    assert finder.urls()[0] == "https://10.0.0.3:8443"


def test_announcements_kept_are_bounded_and_the_newest_stay() -> None:
    finder = ControllerFinder(PIN)
    for i in range(MAX_ADS + 10):
        finder.found(f"fake-{i}", _txt(), [f"10.1.{i // 250}.{i % 250 + 1}"], 8443)
        finder.found(f"other-{i}", _txt(OTHER), ["10.2.0.1"], 8443)
    urls = finder.urls()
    assert len(urls) == MAX_ADS and urls[-1] == f"https://10.1.0.{MAX_ADS + 10}:8443"
    assert len(finder._ads) == len(finder._order) == MAX_ADS
    assert len(finder._ignored) <= MAX_ADS


def test_with_mdns_silent_the_learned_controllers_are_enough() -> None:
    """A joined Pi whose controller's Pi died, on a LAN where mDNS is quiet (or blocked)."""
    finder = ControllerFinder(PIN, known=["https://10.0.0.1:8443", "https://10.0.0.2:8443"])
    assert finder.urls() == ["https://10.0.0.1:8443", "https://10.0.0.2:8443"]
    finder.rotate()
    assert finder.urls() == ["https://10.0.0.2:8443", "https://10.0.0.1:8443"]
    static = ControllerFinder(PIN, static_url="https://10.0.0.9:8443",
                              known=["https://10.0.0.1:8443"])
    assert static.urls() == ["https://10.0.0.9:8443", "https://10.0.0.1:8443"]
