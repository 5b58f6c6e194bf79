"""Wi-Fi for a headless Pi (a Pi Zero W has nothing else): check the input, write configs.

The passphrase itself never reaches the card: like Raspberry Pi Imager, we store the
WPA-PSK derived from it (PBKDF2-HMAC-SHA1 over the SSID, 4096 rounds, 32 bytes: what
`wpa_passphrase` prints), which NetworkManager, wpa_supplicant and netplan all accept as
64 hex digits. It still lets anyone join that network, so it is treated as a secret.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from controller.flash.bootfs import FlashError

_HEX64 = re.compile(r"^[0-9A-Fa-f]{64}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SIMPLE_SSID = re.compile(r"^[!-:<-\[\]-~]([ -:<-\[\]-~]*[!-:<-\[\]-~])?$")  # no ; or \
UUID_NAMESPACE = uuid.UUID("4c1b53a4-2a9e-4d58-9a33-6f1f7b3cf0a1")
CONNECTION_ID = "swarm-enroll-wifi"


@dataclass(frozen=True)
class Wifi:
    ssid: str
    psk_hex: str  # 64 lower-case hex digits
    country: str
    hidden: bool = False

    def __repr__(self) -> str:  # keep the key out of tracebacks and logs
        return f"Wifi(ssid={self.ssid!r}, country={self.country!r}, hidden={self.hidden})"


def check_ssid(ssid: str) -> str:
    size = len(ssid.encode("utf-8", "surrogateescape"))
    if not 1 <= size <= 32 or "\x00" in ssid or "\n" in ssid:
        raise FlashError(f"the Wi-Fi SSID must be 1 to 32 bytes on one line; this one has "
                         f"{size} bytes")
    return ssid


def check_country(country: str | None) -> str:
    if not country:
        raise FlashError("Wi-Fi needs --wifi-country: the two-letter country code of the "
                         "regulatory domain (GB, US, DE, ...); Raspberry Pi OS keeps Wi-Fi "
                         "off without it")
    value = country.strip().upper()
    if not _COUNTRY.match(value):
        raise FlashError(f"--wifi-country must be a two-letter ISO 3166 country code such as "
                         f"GB, US or DE, not {country!r}")
    return value


def derive_psk(ssid: str, secret: str) -> str:
    """64 hex digits: the secret itself if it is a raw PSK, else the WPA key of a passphrase.

    A passphrase is 8 to 63 printable ASCII characters (IEEE 802.11i); a raw PSK is 64 hex
    digits. Anything else is refused without echoing it.
    """
    if _HEX64.match(secret):
        return secret.lower()
    if not 8 <= len(secret) <= 63:
        raise FlashError(f"a Wi-Fi passphrase is 8 to 63 characters (or a 64-hex-digit key); "
                         f"the one given has {len(secret)}")
    if any(not " " <= ch <= "~" for ch in secret):
        raise FlashError("a Wi-Fi passphrase may hold only printable ASCII characters")
    return hashlib.pbkdf2_hmac("sha1", secret.encode("ascii"), ssid.encode("utf-8"),
                               4096, 32).hex()


def make_wifi(ssid: str, secret: str, country: str | None, hidden: bool = False) -> Wifi:
    ssid = check_ssid(ssid)
    psk = derive_psk(ssid, secret)
    return Wifi(ssid, psk, check_country(country), hidden)


# ---- renderings ------------------------------------------------------------------------

def network_config(wifi: Wifi) -> dict[str, Any]:
    """cloud-init network config, version 2 (netplan's format), as Imager writes it."""
    access_point: dict[str, Any] = {"password": wifi.psk_hex}
    if wifi.hidden:
        access_point["hidden"] = True
    return {
        "network": {
            "version": 2,
            # optional: a Pi Zero W has no eth0, and boot must not wait for a cable
            "ethernets": {"eth0": {"dhcp4": True, "optional": True}},
            "wifis": {
                "wlan0": {
                    "dhcp4": True,
                    "optional": True,
                    "regulatory-domain": wifi.country,
                    "access-points": {wifi.ssid: access_point},
                },
            },
        },
    }


def _keyfile_ssid(ssid: str) -> str:
    if _SIMPLE_SSID.match(ssid) and not ssid.isdigit():
        return ssid
    # anything else (and digits only, which would read as a byte list) as the byte list
    # that NetworkManager's keyfile format also reads
    return "".join(f"{b};" for b in ssid.encode("utf-8"))


def nm_keyfile(wifi: Wifi) -> str:
    """A NetworkManager connection (Raspberry Pi OS since Bookworm); install it 0600."""
    conn_uuid = uuid.uuid5(UUID_NAMESPACE, "wifi:" + wifi.ssid)
    lines = [
        "[connection]",
        f"id={CONNECTION_ID}",
        f"uuid={conn_uuid}",
        "type=wifi",
        "interface-name=wlan0",
        "autoconnect=true",
        "",
        "[wifi]",
        "mode=infrastructure",
        f"ssid={_keyfile_ssid(wifi.ssid)}",
    ]
    if wifi.hidden:
        lines.append("hidden=true")
    lines += [
        "",
        "[wifi-security]",
        "key-mgmt=wpa-psk",
        f"psk={wifi.psk_hex}",
        "",
        "[ipv4]",
        "method=auto",
        "",
        "[ipv6]",
        "addr-gen-mode=default",
        "method=auto",
        "",
    ]
    return "\n".join(lines)


def wpa_supplicant_conf(wifi: Wifi) -> str:
    """wpa_supplicant.conf for images without NetworkManager; install it 0600."""
    lines = [
        f"country={wifi.country}",
        "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev",
        "update_config=1",
        "",
        "network={",
        # an unquoted ssid is hex: any bytes, no escaping
        f"\tssid={wifi.ssid.encode('utf-8').hex()}",
    ]
    if wifi.hidden:
        lines.append("\tscan_ssid=1")
    lines += ["\tkey_mgmt=WPA-PSK", f"\tpsk={wifi.psk_hex}", "}", ""]
    return "\n".join(lines)
