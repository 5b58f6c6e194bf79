"""Wi-Fi input checks and the configs written for NetworkManager, wpa_supplicant, netplan."""

from __future__ import annotations

import configparser

import pytest

from controller.flash.bootfs import FlashError
from controller.flash.wifi import (
    derive_psk,
    make_wifi,
    network_config,
    nm_keyfile,
    wpa_supplicant_conf,
)


def test_psk_is_the_wpa_key_of_the_passphrase() -> None:
    # IEEE 802.11i-2004, annex H.4.1 test vector
    assert derive_psk("IEEE", "password") == \
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    raw = "A" * 64
    assert derive_psk("x", raw) == "a" * 64


@pytest.mark.parametrize("secret", ["", "short77", "x" * 64, "y" * 65, "pass\tword",
                                    "pässwörter"])
def test_bad_passphrases_are_refused_without_echo(secret: str) -> None:
    with pytest.raises(FlashError) as err:
        derive_psk("Lab", secret)
    assert (secret or "\x00") not in str(err.value)


@pytest.mark.parametrize("length", [8, 63])
def test_passphrase_length_bounds(length: int) -> None:
    assert len(derive_psk("Lab", "p" * length)) == 64


@pytest.mark.parametrize(("ssid", "country", "match"), [
    ("", "GB", "SSID"), ("x" * 33, "GB", "SSID"), ("Lab", None, "--wifi-country"),
    ("Lab", "GBR", "two-letter"), ("Lab", "1A", "two-letter"),
])
def test_bad_wifi_input(ssid: str, country: str | None, match: str) -> None:
    with pytest.raises(FlashError, match=match):
        make_wifi(ssid, "password123", country)


def test_key_never_shows_in_repr() -> None:
    wifi = make_wifi("Lab", "password123", "gb")
    assert wifi.country == "GB"
    assert wifi.psk_hex not in repr(wifi)


def test_network_manager_keyfile() -> None:
    wifi = make_wifi("Lab Wi-Fi", "password123", "GB", hidden=True)
    kf = configparser.ConfigParser(interpolation=None)
    kf.read_string(nm_keyfile(wifi))
    assert kf["connection"]["type"] == "wifi"
    assert kf["wifi"]["ssid"] == "Lab Wi-Fi" and kf["wifi"]["hidden"] == "true"
    assert kf["wifi-security"]["key-mgmt"] == "wpa-psk"
    assert kf["wifi-security"]["psk"] == wifi.psk_hex
    assert nm_keyfile(wifi) == nm_keyfile(make_wifi("Lab Wi-Fi", "password123", "GB", True))


@pytest.mark.parametrize("ssid", ["semi;colon", "back\\slash", " lead", "12345", "café"])
def test_awkward_ssids_are_written_as_bytes(ssid: str) -> None:
    text = nm_keyfile(make_wifi(ssid, "password123", "GB"))
    line = next(x for x in text.splitlines() if x.startswith("ssid="))
    assert line == "ssid=" + "".join(f"{b};" for b in ssid.encode())


def test_wpa_supplicant_conf() -> None:
    ssid = 'we "quote"'
    wifi = make_wifi(ssid, "password123", "DE")
    text = wpa_supplicant_conf(wifi)
    assert "country=DE" in text.splitlines()
    assert "\tssid=" + ssid.encode().hex() in text.splitlines()
    assert f"\tpsk={wifi.psk_hex}" in text.splitlines()
    assert "password123" not in text


def test_network_config_is_version_2() -> None:
    wifi = make_wifi("Lab", "password123", "GB")
    net = network_config(wifi)["network"]
    assert net["version"] == 2
    assert net["wifis"]["wlan0"]["access-points"] == {"Lab": {"password": wifi.psk_hex}}
    assert net["wifis"]["wlan0"]["regulatory-domain"] == "GB"
