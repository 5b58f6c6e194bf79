"""`enrollctl flash`: prepare a Raspberry Pi's boot partition so that the Pi enrolls itself.

The card carries everything the first boot needs under `swarm-enroll/` on the boot
partition (the agent config, the wheel, the first-boot script and the systemd units), and
one of two hooks that run the script: cloud-init (`user-data`, `network-config`,
`meta-data`) on images that have it, or `systemd.run=` in `cmdline.txt` (the way Raspberry
Pi Imager customised Bookworm images) on images that do not.

Modules: `bootfs` (finding and editing the partition), `wifi`, `cloudinit`, `plan`
(validate everything, compute every file, then write), `wheel`, `cli`.
"""

from __future__ import annotations

PAYLOAD_DIR = "swarm-enroll"
