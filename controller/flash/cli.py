"""`enrollctl flash BOOTFS --hostname NAME ...`: the command line of the flash package.

Secrets never come from the command line (it ends up in shell history and in `ps`): the
bootstrap token comes from a file or stdin, the Wi-Fi passphrase from a file or a prompt.
Every problem is one line on stderr and exit status 1, and leaves the card unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from controller.flash.bootfs import FlashError, open_bootfs
from controller.flash.plan import FlashOptions, apply, check_hostname, check_ssh_keys, make_plan
from controller.flash.wheel import build_wheel, check_wheel
from controller.flash.wifi import check_country, check_ssid, make_wifi


def _read(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except FileNotFoundError:
        raise FlashError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FlashError(f"{what} {path}: cannot read it ({exc})") from None


def _one_line(text: str) -> str:
    """A secret read from a file or stdin: the line ending goes, nothing else."""
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


def _token(token_file: str | None, token_stdin: bool) -> str:
    if token_file and token_stdin:
        raise FlashError("give the bootstrap token with --token-file or --token-stdin, not both")
    if token_file:
        text = _read(token_file, "--token-file")
    elif token_stdin:
        text = sys.stdin.read()
    else:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise FlashError("the bootstrap token must be one line (as 'enrollctl tokens create' "
                         "prints it)")
    return lines[0]


def _interactive() -> bool:
    return sys.stdin.isatty()


def _psk(psk_file: str | None, stdin_taken: bool) -> str:
    if psk_file:
        return _one_line(_read(psk_file, "--wifi-psk-file"))
    if stdin_taken or not _interactive():
        raise FlashError("give the Wi-Fi passphrase with --wifi-psk-file FILE (there is no "
                         "terminal to ask on)")
    return click.prompt("Wi-Fi passphrase", hide_input=True, confirmation_prompt=True,
                        err=True)


@click.command("flash")
@click.argument("bootfs", required=False)
@click.option("--hostname", default="", help="The Pi's hostname (what the rules match).")
@click.option("--pin", default="", help="CA pin, sha256:... (default: the CA of "
              "--controller-state, else enrollctl's --pin / ENROLLCTL_PIN).")
@click.option("--token-file", default=None, metavar="FILE",
              help="File holding a bootstrap token ('enrollctl tokens create').")
@click.option("--token-stdin", is_flag=True, help="Read the bootstrap token from stdin.")
@click.option("--controller-url", default="", metavar="URL",
              help="https://host:8443: skip mDNS (networks that block multicast).")
@click.option("--wifi-ssid", default=None, metavar="SSID", help="Join this Wi-Fi network.")
@click.option("--wifi-psk-file", default=None, metavar="FILE",
              help="File holding the Wi-Fi passphrase (else you are asked for it).")
@click.option("--wifi-country", default=None, metavar="CC",
              help="Wi-Fi regulatory domain: GB, US, DE, ...")
@click.option("--wifi-hidden", is_flag=True, help="The network does not broadcast its SSID.")
@click.option("--ssh-key", default=None, metavar="FILE",
              help="Authorise this SSH public key (e.g. ~/.ssh/id_ed25519.pub).")
@click.option("--ssh-user", default="", metavar="USER",
              help="User for --ssh-key (default: the image's first user, else pi).")
@click.option("--method", default="auto", metavar="auto|cloud-init|firstrun",
              show_default=True, help="First-boot hook: cloud-init when the card has a "
              "user-data file, else a systemd.run= first-run script in cmdline.txt.")
@click.option("--controller-state", default="", metavar="DIR",
              help="Make a controller card from 'enroll-controller init --no-swarm-init "
              "--state-dir DIR'.")
@click.option("--wheel", default="", metavar="PATH",
              help="The swarm-enroll wheel to install (default: build one from this tree).")
@click.option("--wheelhouse", default="", metavar="DIR",
              help="Wheels of the dependencies for the Pi's architecture (offline install).")
@click.option("--docker-package", default="docker.io", show_default=True, metavar="NAME",
              help="OS package that provides Docker ('none': the image has Docker).")
@click.pass_context
def flash(ctx: click.Context, bootfs: str | None, hostname: str, pin: str,
          token_file: str | None, token_stdin: bool, controller_url: str,
          wifi_ssid: str | None, wifi_psk_file: str | None, wifi_country: str | None,
          wifi_hidden: bool, ssh_key: str | None, ssh_user: str, method: str,
          controller_state: str, wheel: str, wheelhouse: str, docker_package: str) -> None:
    """Write what a Pi needs to enroll itself onto the mounted boot partition BOOTFS.

    Example: enrollctl flash /media/$USER/bootfs --hostname PiLike-03 --pin sha256:...
    --token-file token.txt --wifi-ssid Home --wifi-country GB
    """
    try:
        run_flash(ctx.obj, bootfs, hostname=hostname, pin=pin, token_file=token_file,
                  token_stdin=token_stdin, controller_url=controller_url, wifi_ssid=wifi_ssid,
                  wifi_psk_file=wifi_psk_file, wifi_country=wifi_country,
                  wifi_hidden=wifi_hidden, ssh_key=ssh_key, ssh_user=ssh_user, method=method,
                  controller_state=controller_state, wheel=wheel, wheelhouse=wheelhouse,
                  docker_package=docker_package)
    except FlashError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"writing the card failed: {exc}; run the same command "
                                   "again once fixed") from None


def run_flash(obj: Any, bootfs: str | None, *, hostname: str, pin: str, token_file: str | None,
              token_stdin: bool, controller_url: str, wifi_ssid: str | None,
              wifi_psk_file: str | None, wifi_country: str | None, wifi_hidden: bool,
              ssh_key: str | None, ssh_user: str, method: str, controller_state: str,
              wheel: str, wheelhouse: str, docker_package: str) -> None:
    # cheap checks first: nobody should type a passphrase for a card that is not there
    if not bootfs:
        raise FlashError("give the mounted boot partition: enrollctl flash BOOTFS "
                         "--hostname NAME ...")
    open_bootfs(bootfs)
    check_hostname(hostname)
    if not pin and not controller_state:
        pin = getattr(obj, "pin", "") or ""
    token = _token(token_file, token_stdin)
    keys = check_ssh_keys(_read(ssh_key, "--ssh-key"), ssh_key) if ssh_key else []
    wifi = None
    if wifi_ssid is None and (wifi_psk_file or wifi_country or wifi_hidden):
        raise FlashError("--wifi-psk-file, --wifi-country and --wifi-hidden need --wifi-ssid")
    if wifi_ssid is not None:
        check_ssid(wifi_ssid)
        check_country(wifi_country)
    opts = FlashOptions(bootfs=bootfs, hostname=hostname, pin=pin, token=token,
                        controller_url=controller_url, ssh_keys=keys, ssh_user=ssh_user,
                        method=method, controller_state=controller_state,
                        wheelhouse=wheelhouse, docker_package=docker_package)
    # everything but the Wi-Fi key and the wheel, before asking or building
    make_plan(opts, None)
    if wheel:
        check_wheel(wheel)
    if wifi_ssid is not None:
        wifi = make_wifi(wifi_ssid, _psk(wifi_psk_file, token_stdin), wifi_country, wifi_hidden)
        opts.wifi = wifi
    if not wheel:
        click.echo("building the swarm-enroll wheel from this source tree ...", err=True)
        wheel = str(build_wheel())
    plan = make_plan(opts, wheel)
    apply(plan)
    click.echo(f"Flashed {plan.bootfs.path} for {plan.hostname}:")
    for line in plan.summary:
        click.echo(f"  {line}")
    click.echo("The agent config (and any token) stays on this card until the first boot "
               "moves it off; keep the card safe until then.")
    click.echo("Eject the card, put it into the Pi and power it on; then watch "
               "'enrollctl nodes'.")
