"""cloud-init's NoCloud files on the boot partition: user-data, network-config, meta-data.

What the card already has (Raspberry Pi Imager's user, SSH and locale settings, or the
image's defaults) is kept: our settings are merged into it, and the original file stays
on the card as `<name>.swarm-enroll-orig`. Each file we write starts with a marker line,
so that a second `enrollctl flash` merges into the original again instead of into its
own output.
"""

from __future__ import annotations

import copy
from typing import Any

from controller.flash import PAYLOAD_DIR
from controller.flash.bootfs import BACKUP_SUFFIX, FlashError

MARKER = "# swarm-enroll: written by 'enrollctl flash'"

# cloud-init runs this in its final stage, with the network up. The boot partition is
# /boot/firmware on current images, /boot on older ones.
RUNCMD = [
    "sh", "-c",
    "for d in /boot/firmware /boot; do "
    f'if [ -f "$d/{PAYLOAD_DIR}/firstboot.sh" ]; then '
    f'exec sh "$d/{PAYLOAD_DIR}/firstboot.sh" prepare; fi; done; '
    "echo 'swarm-enroll: firstboot.sh not found on the boot partition' >&2; exit 1",
]


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise FlashError("the cloud-init method needs PyYAML: pip install "
                         "'swarm-enroll[controller]'") from None
    return yaml


def ours(text: str) -> bool:
    """Was this file written by us (so the card's original is in the backup)?"""
    return any(line.startswith(MARKER) for line in text.splitlines()[:2])


def header(name: str) -> str:
    return f"{MARKER}; the card's original is {name}{BACKUP_SUFFIX} if it had one\n"


def load_cloud_config(text: str, name: str = "user-data") -> dict[str, Any]:
    """The card's user-data as a dict; {} for an empty or comment-only file."""
    yaml = _yaml()
    body = text.lstrip("\ufeff")
    comments_only = all(not line.strip() or line.lstrip().startswith("#")
                        for line in body.splitlines())
    if comments_only and not body.startswith("#cloud-config"):
        return {}
    if not body.startswith("#cloud-config"):
        raise FlashError(f"the card's {name} is not a #cloud-config file (a script or a "
                         "multi-part file); flash with --method firstrun instead")
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise FlashError(f"the card's {name} is not valid YAML{where}; fix or delete it, "
                         "or flash with --method firstrun") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FlashError(f"the card's {name} is not a YAML mapping; fix or delete it")
    return data


def merge_user_data(base: dict[str, Any], hostname: str, ssh_keys: list[str],
                    ssh_user: str | None) -> dict[str, Any]:
    """`base` with our hostname, SSH key and first-boot command added."""
    data = copy.deepcopy(base)
    data["hostname"] = hostname
    data["preserve_hostname"] = False
    if isinstance(data.get("fqdn"), str) and "." in data["fqdn"]:
        data["fqdn"] = hostname + data["fqdn"][data["fqdn"].index("."):]
    else:
        data.pop("fqdn", None)
    data.setdefault("manage_etc_hosts", True)
    if ssh_keys:
        _add_ssh_keys(data, ssh_keys, ssh_user)
    runcmd = data.get("runcmd")
    if runcmd is None:
        runcmd = []
    if not isinstance(runcmd, list):
        raise FlashError("the card's user-data has a runcmd that is not a list; fix it first")
    data["runcmd"] = [c for c in runcmd if c != RUNCMD] + [RUNCMD]
    return data


def _add_ssh_keys(data: dict[str, Any], keys: list[str], ssh_user: str | None) -> None:
    users = data.get("users")
    if users is None:
        users = []
    if not isinstance(users, list):
        raise FlashError("the card's user-data has a users entry that is not a list; fix it")
    entries = [u for u in users if isinstance(u, dict) and isinstance(u.get("name"), str)]
    if ssh_user:
        entry = next((u for u in entries if u["name"] == ssh_user), None)
    else:  # the user Raspberry Pi Imager set up, if any
        entry = entries[0] if entries else None
    if entry is None:
        entry = {"name": ssh_user or "pi", "groups": "sudo", "shell": "/bin/bash",
                 "lock_passwd": True, "sudo": "ALL=(ALL) NOPASSWD:ALL"}
        users.append(entry)
    have = entry.get("ssh_authorized_keys") or []
    if not isinstance(have, list):
        have = [have]
    entry["ssh_authorized_keys"] = have + [k for k in keys if k not in have]
    data["users"] = users
    data["enable_ssh"] = True  # Raspberry Pi OS's cloud-init module: start sshd


def dump(data: dict[str, Any], name: str, cloud_config: bool = False) -> str:
    yaml = _yaml()
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=1000)
    first = "#cloud-config\n" if cloud_config else ""
    return first + header(name) + body


def meta_data(hostname: str) -> dict[str, Any]:
    return {"instance-id": f"swarm-enroll-{hostname.lower()}", "local-hostname": hostname}
