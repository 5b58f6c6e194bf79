#!/bin/sh
# swarm-enroll first boot, written onto the boot partition by `enrollctl flash`.
#
#   firstboot.sh [prepare]  once, early, from the boot partition: by the kernel
#       (systemd.run= in cmdline.txt, then the Pi reboots) or by cloud-init (runcmd).
#       Moves the agent config (and a controller's state) off the FAT partition into
#       root-only places, sets hostname, Wi-Fi and SSH key (firstrun method), installs
#       and enables swarm-enroll-firstboot.service.
#   firstboot.sh install    from swarm-enroll-firstboot.service, with the network up:
#       Docker from the OS packages, the venv /opt/swarm-enroll from the wheel, the
#       systemd units; starts the agent (and the controller on a controller card).
#
# Each step looks at what is already done first, so a Pi that loses power half way
# carries on at the next boot. Secrets move only as files (mode 0600), never as
# command-line arguments. Logs: the journal (journalctl -t swarm-enroll-firstboot)
# and, while the boot partition is there, swarm-enroll/firstboot.log on it.
#
# SE_ROOT (tests only) is put in front of every path of the installed system.

set -u
umask 077

ROOT="${SE_ROOT:-}"
STATE="$ROOT/var/lib/swarm-enroll-firstboot"
PAYLOAD="$STATE/payload"
VENV_ON_PI=/opt/swarm-enroll
VENV="$ROOT$VENV_ON_PI"
ETC="$ROOT/etc/swarm-enroll"
CONTROLLER_STATE="$ROOT/var/lib/swarm-enroll"
UNIT_DIR="$ROOT/etc/systemd/system"
SCRIPT_ON_PI=/usr/local/lib/swarm-enroll/firstboot.sh
HOOK_ON_PI=/boot/firmware/swarm-enroll/firstboot.sh
TAG=swarm-enroll-firstboot
BOOT_LOG=""

# stdout straight into the journal (our own unit)? Else stderr (console) + logger.
TO_JOURNAL=0
if [ -n "${JOURNAL_STREAM:-}" ] && \
   [ "$(stat -L -c '%d:%i' "/proc/$$/fd/1" 2>/dev/null)" = "$JOURNAL_STREAM" ]; then
  TO_JOURNAL=1
fi

log() {
  if [ "$TO_JOURNAL" = 1 ]; then
    printf '%s\n' "$*"
  else
    printf '%s: %s\n' "$TAG" "$*" >&2
    logger -t "$TAG" -- "$*" 2>/dev/null || true
  fi
  if [ -n "$BOOT_LOG" ] && [ -d "$(dirname "$BOOT_LOG")" ]; then
    printf '%s %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >>"$BOOT_LOG" 2>/dev/null || true
  fi
}

ERRORS=0
fail() { log "ERROR: $*"; ERRORS=$((ERRORS + 1)); }
die() { log "ERROR: $*"; exit 1; }

# Overwrite, then delete: a FAT partition keeps deleted data until it is reused.
wipe() {
  [ -e "$1" ] || return 0
  shred -n 1 -z -u "$1" 2>/dev/null || rm -f "$1"
}

# move_secret SRC DST: copy to DST (0600), check the copy, then wipe SRC.
move_secret() {
  if [ -f "$1" ]; then
    if install -m 0600 "$1" "$2.tmp" && cmp -s "$1" "$2.tmp" && mv -f "$2.tmp" "$2"; then
      wipe "$1"
      log "moved $(basename "$1") to ${2#"$ROOT"} (0600) and deleted it from the boot partition"
    else
      rm -f "$2.tmp"
      fail "could not move $1 to ${2#"$ROOT"}"
    fi
  elif [ -f "$2" ]; then
    log "${2#"$ROOT"} is in place already"
  fi
}

quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# ---- prepare ---------------------------------------------------------------------------

set_hostname() {
  install -m 0644 /dev/null "$ROOT/etc/hostname.new" &&
    printf '%s\n' "$SE_HOSTNAME" >"$ROOT/etc/hostname.new" &&
    mv -f "$ROOT/etc/hostname.new" "$ROOT/etc/hostname" || fail "could not write /etc/hostname"
  if [ -f "$ROOT/etc/hosts" ] && grep -q '^127\.0\.1\.1[[:space:]]' "$ROOT/etc/hosts"; then
    sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1\t$SE_HOSTNAME/" "$ROOT/etc/hosts"
  else
    printf '127.0.1.1\t%s\n' "$SE_HOSTNAME" >>"$ROOT/etc/hosts"
    chmod 0644 "$ROOT/etc/hosts"
  fi
  log "hostname set to $SE_HOSTNAME"
}

passwd_field() {  # passwd_field USER FIELD
  awk -F: -v u="$1" -v f="$2" '$1 == u { print $f; exit }' "$ROOT/etc/passwd"
}

install_ssh_key() {
  keys="$SRC/authorized_keys"
  [ -f "$keys" ] || return 0
  user="$SE_SSH_USER"
  [ -n "$user" ] || user=$(awk -F: '$3 == 1000 { print $1; exit }' "$ROOT/etc/passwd")
  [ -n "$user" ] || user=pi
  if [ -z "$(passwd_field "$user" 1)" ]; then
    if [ -z "$ROOT" ] && [ -x /usr/lib/userconf-pi/userconf ]; then
      # Raspberry Pi OS: what Imager does for key-only users (also ends the setup wizard)
      /usr/lib/userconf-pi/userconf "$user" '' || fail "userconf $user failed"
    else
      useradd ${ROOT:+--root "$ROOT"} -m -s /bin/bash -G sudo "$user" ||
        fail "could not create user $user"
    fi
    mkdir -p "$ROOT/etc/sudoers.d"
    printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$user" >"$ROOT/etc/sudoers.d/010_swarm-enroll-$user"
    chmod 0440 "$ROOT/etc/sudoers.d/010_swarm-enroll-$user"
    log "created user $user (password locked: SSH key only)"
  fi
  home=$(passwd_field "$user" 6)
  uid=$(passwd_field "$user" 3)
  gid=$(passwd_field "$user" 4)
  if [ -z "$home" ]; then
    fail "no user $user for the SSH key"
    return 0
  fi
  install -d -m 0700 "$ROOT$home/.ssh"
  touch "$ROOT$home/.ssh/authorized_keys"
  while IFS= read -r key; do
    [ -n "$key" ] || continue
    grep -qxF -- "$key" "$ROOT$home/.ssh/authorized_keys" ||
      printf '%s\n' "$key" >>"$ROOT$home/.ssh/authorized_keys"
  done <"$keys"
  chmod 0600 "$ROOT$home/.ssh/authorized_keys"
  chown -R "$uid:$gid" "$ROOT$home/.ssh" || fail "could not chown $home/.ssh"
  log "SSH key(s) installed for $user"
}

install_wifi() {
  nm="$SRC/wifi/swarm-enroll-wifi.nmconnection"
  wpa="$SRC/wifi/wpa_supplicant.conf"
  if [ -f "$nm" ]; then
    if [ -d "$ROOT/etc/NetworkManager" ]; then
      mkdir -p "$ROOT/etc/NetworkManager/system-connections"
      move_secret "$nm" "$ROOT/etc/NetworkManager/system-connections/swarm-enroll-wifi.nmconnection"
    else
      mkdir -p "$ROOT/etc/wpa_supplicant"
      move_secret "$wpa" "$ROOT/etc/wpa_supplicant/wpa_supplicant.conf"
    fi
  fi
  wipe "$nm"
  wipe "$wpa"
  rmdir "$SRC/wifi" 2>/dev/null || true
  # Raspberry Pi OS keeps Wi-Fi soft-blocked until a country is set (cmdline.txt has it)
  rfkill unblock wifi 2>/dev/null || true
  for f in "$ROOT"/var/lib/systemd/rfkill/*:wlan; do
    [ -f "$f" ] && echo 0 >"$f"
  done
  log "Wi-Fi configured"
}

# The boot partition stays mounted; cloud-init keeps reading network-config (with the
# Wi-Fi key) from it. Make it root-only instead of world-readable (from the next boot).
harden_boot_mount() {
  mp="${BOOT#"$ROOT"}"
  fstab="$ROOT/etc/fstab"
  [ -f "$fstab" ] || return 0
  awk -v mp="$mp" '
    $2 == mp && $3 == "vfat" && $4 !~ /(^|,)fmask=/ { $4 = $4 ",fmask=0077,dmask=0077" }
    { print }' "$fstab" >"$fstab.new" &&
    chmod 0644 "$fstab.new" &&
    if cmp -s "$fstab" "$fstab.new"; then rm -f "$fstab.new"; else
      mv -f "$fstab.new" "$fstab"
      log "$mp is mounted root-only (fmask=0077,dmask=0077) from the next boot"
    fi
  mount -o remount,fmask=0077,dmask=0077 "$mp" 2>/dev/null || true
}

unhook_cmdline() {
  cmdline="$BOOT/cmdline.txt"
  if grep -qF "systemd.run=$HOOK_ON_PI" "$cmdline" 2>/dev/null; then
    sed -i -e "s# systemd\.run=$HOOK_ON_PI##" -e 's# systemd\.run_success_action=reboot##' \
      -e 's# systemd\.unit=kernel-command-line\.target##' "$cmdline" ||
      fail "could not remove the first-boot hook from cmdline.txt"
    log "first-boot hook removed from cmdline.txt"
  fi
}

prepare() {
  BOOT=$(cd "$(dirname "$0")/.." && pwd)
  SRC="$BOOT/swarm-enroll"
  BOOT_LOG="$SRC/firstboot.log"
  if [ ! -f "$SRC/firstboot.env" ]; then
    log "no $SRC/firstboot.env: nothing to do"
    return 0
  fi
  . "$SRC/firstboot.env"
  log "prepare: $SE_HOSTNAME, $SE_ROLE, swarm-enroll $SE_VERSION ($SE_METHOD)"
  mkdir -p "$STATE" && chmod 0700 "$STATE"

  # another first-run script that cmdline.txt ran before we took the hook over
  if [ -n "$SE_CHAIN" ] && [ ! -e "$STATE/chain.done" ]; then
    if [ -f "$BOOT/$SE_CHAIN" ]; then
      log "running $SE_CHAIN (another first-run script on this card) first"
      if head -n 1 "$BOOT/$SE_CHAIN" | grep -q bash; then
        bash "$BOOT/$SE_CHAIN"
      else
        sh "$BOOT/$SE_CHAIN"
      fi
      log "$SE_CHAIN exited with status $?"
      wipe "$BOOT/$SE_CHAIN"  # Imager's holds a password hash and the Wi-Fi key
    fi
    touch "$STATE/chain.done"
  fi

  # what the second stage needs, out of the boot partition
  mkdir -p "$PAYLOAD"
  for item in dist wheelhouse systemd firstboot.env; do
    [ -e "$SRC/$item" ] && cp -R "$SRC/$item" "$PAYLOAD/"
  done
  printf 'SE_BOOT=%s\n' "$(quote "$BOOT")" >"$PAYLOAD/boot.env"
  install -D -m 0755 "$SRC/firstboot.sh" "$ROOT$SCRIPT_ON_PI" || fail "could not install $SCRIPT_ON_PI"

  # secrets: off the card, into root-only files
  mkdir -p "$ETC" && chmod 0700 "$ETC"
  move_secret "$SRC/agent.toml" "$ETC/agent.toml"
  [ -f "$ETC/agent.toml" ] || fail "no agent config (swarm-enroll/agent.toml): flash the card again"
  if [ "$SE_ROLE" = controller ]; then
    mkdir -p "$CONTROLLER_STATE" && chmod 0700 "$CONTROLLER_STATE"
    for f in "$SRC"/controller/*; do
      [ -f "$f" ] && move_secret "$f" "$CONTROLLER_STATE/$(basename "$f")"
    done
    rmdir "$SRC/controller" 2>/dev/null || true
    [ -f "$CONTROLLER_STATE/controller.toml" ] || fail "no controller state: flash the card again"
  fi

  if [ "$SE_METHOD" = firstrun ]; then
    set_hostname
    [ "$SE_WIFI" = 1 ] && install_wifi
    install_ssh_key
  elif [ "$SE_WIFI" = 1 ]; then
    harden_boot_mount
  fi
  if [ "$SE_SSH" = 1 ]; then
    systemctl enable ssh >/dev/null 2>&1 || true
  fi

  install -D -m 0644 "$SRC/systemd/swarm-enroll-firstboot.service" \
    "$UNIT_DIR/swarm-enroll-firstboot.service" || fail "could not install the first-boot unit"
  mkdir -p "$UNIT_DIR/multi-user.target.wants"
  ln -sfn /etc/systemd/system/swarm-enroll-firstboot.service \
    "$UNIT_DIR/multi-user.target.wants/swarm-enroll-firstboot.service"

  if [ "$SE_METHOD" = firstrun ]; then
    unhook_cmdline
    log "prepare done ($ERRORS error(s)); rebooting into the second stage"
  else
    systemctl daemon-reload
    systemctl start --no-block swarm-enroll-firstboot.service
    log "prepare done ($ERRORS error(s)); swarm-enroll-firstboot.service started"
  fi
  sync
  # always 0: a failing systemd.run command would leave the Pi stuck before its network
  return 0
}

# ---- install ---------------------------------------------------------------------------

systemd_version() {
  systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 + 0 }'
}

installed() {  # installed PACKAGE: in dpkg's database as installed?
  dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f='${Status}' "$1" 2>/dev/null |
    grep -q ' installed$'
}

install_packages() {
  [ -f "$STATE/packages.done" ] && return 0
  pkgs=""
  installed python3-venv || pkgs="python3-venv"
  if [ "$SE_DOCKER_PACKAGE" != none ] && [ ! -x "$ROOT/usr/bin/dockerd" ] &&
     [ ! -x "$ROOT/usr/sbin/dockerd" ]; then
    pkgs="$SE_DOCKER_PACKAGE $pkgs"
  fi
  if [ -z "$pkgs" ]; then  # an image that has them: no network needed for apt
    log "Docker and python3-venv are installed already"
    touch "$STATE/packages.done"
    return 0
  fi
  log "installing $pkgs from the OS packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -q -o DPkg::Lock::Timeout=600 update ||
    die "apt-get update failed (network not up yet?); trying again in a minute"
  # shellcheck disable=SC2086 # a list of package names
  apt-get -q -y -o DPkg::Lock::Timeout=600 install $pkgs ||
    die "apt-get install $pkgs failed; trying again in a minute"
  touch "$STATE/packages.done"
}

start_docker() {
  systemctl enable --now docker.service || die "could not start docker.service"
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 30 ] || die "Docker does not answer; see journalctl -u docker"
    sleep 2
  done
}

install_venv() {
  want="enroll-agent, version $SE_VERSION"
  if [ "$("$VENV/bin/enroll-agent" --version 2>/dev/null)" = "$want" ]; then
    log "$VENV_ON_PI has swarm-enroll $SE_VERSION already"
    return 0
  fi
  log "creating the venv $VENV_ON_PI"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv $VENV_ON_PI failed"
  # every Pi gets the controller too: a worker promoted later runs one (its agent, or
  # enroll-controller-ensure.timer, starts enroll-controller.service while the Pi is a
  # manager); it costs disk, not memory
  spec="$PAYLOAD/dist/$SE_WHEEL[controller]"
  if [ -d "$PAYLOAD/wheelhouse" ]; then
    set -- --no-index --find-links "$PAYLOAD/wheelhouse"
  else
    set --
  fi
  "$VENV/bin/pip" install --no-input --disable-pip-version-check "$@" "$spec" ||
    die "pip install $SE_WHEEL failed; trying again in a minute"
  [ "$("$VENV/bin/enroll-agent" --version 2>/dev/null)" = "$want" ] ||
    die "enroll-agent --version does not say $SE_VERSION after the install"
  log "installed swarm-enroll $SE_VERSION into $VENV_ON_PI"
}

# the check-in and the controller's ensure step, each a timer and its oneshot service
TIMERS="enroll-agent-check.timer enroll-controller-ensure.timer"

install_units() {
  daemons="enroll-agent.service enroll-controller.service"
  version=$(systemd_version)
  for unit in $daemons; do
    install -D -m 0644 "$PAYLOAD/systemd/$unit" "$UNIT_DIR/$unit" || die "could not install $unit"
    if [ "${version:-0}" -ge 254 ]; then  # RestartSteps= and RestartMaxDelaySec=
      install -D -m 0644 "$PAYLOAD/systemd/restart-backoff.conf" \
        "$UNIT_DIR/$unit.d/restart-backoff.conf"
    fi
  done
  for timer in $TIMERS; do
    for unit in "$timer" "${timer%.timer}.service"; do
      install -D -m 0644 "$PAYLOAD/systemd/$unit" "$UNIT_DIR/$unit" || die "could not install $unit"
    done
  done
  systemctl daemon-reload
}

log_fingerprint() {
  # what the admin compares before approving this Pi: no secret, only the key's name
  fp=$("$VENV/bin/enroll-agent" id --config "$ETC/agent.toml" 2>/dev/null |
       python3 -c 'import json, sys; print(json.load(sys.stdin)["fingerprint"])' 2>/dev/null)
  if [ -n "$fp" ]; then
    log "agent key fingerprint: $fp (compare it with 'enrollctl nodes' before approving)"
  else
    fail "could not read the agent key fingerprint (enroll-agent id)"
  fi
}

# Raspberry Pi OS runs avahi-daemon: the Pi is announced through it from now on (the
# agent rewrites the file as its state changes, and it stays when the agent exits).
announce_avahi() {
  [ -d "$ROOT/etc/avahi/services" ] || return 0  # no avahi: the agent's own zeroconf
  if out=$("$VENV/bin/enroll-agent" announce --config "$ETC/agent.toml" 2>&1); then
    log "avahi announces this Pi ($out)"
  else
    fail "could not write avahi's service file: $out"
  fi
}

init_swarm() {
  swarm=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)
  if [ "$swarm" = active ]; then
    log "this Docker is in a swarm already"
    return 0
  fi
  log "docker swarm init --advertise-addr $SE_ADVERTISE_ADDR"
  docker swarm init --advertise-addr "$SE_ADVERTISE_ADDR" >/dev/null ||
    die "docker swarm init failed: does this Pi have the address $SE_ADVERTISE_ADDR (the controller's advertise_addr)? Give it that address (DHCP reservation)"
}

install_stage() {
  if [ -f "$STATE/done" ]; then
    log "first boot finished earlier; nothing to do"
    return 0
  fi
  [ -f "$PAYLOAD/firstboot.env" ] || die "no $PAYLOAD: the first stage did not run"
  . "$PAYLOAD/firstboot.env"
  . "$PAYLOAD/boot.env"
  BOOT_LOG="$SE_BOOT/swarm-enroll/firstboot.log"
  log "install: $SE_HOSTNAME, $SE_ROLE, swarm-enroll $SE_VERSION"
  [ -f "$ETC/agent.toml" ] || die "no /etc/swarm-enroll/agent.toml: flash the card again"

  install_packages
  start_docker
  install_venv
  install_units
  if [ "$SE_ROLE" = controller ]; then
    init_swarm
    systemctl enable --now enroll-controller.service || die "could not start enroll-controller"
  fi
  log_fingerprint
  announce_avahi
  systemctl enable --now enroll-agent.service || die "could not start enroll-agent"
  # shellcheck disable=SC2086 # a list of unit names
  systemctl enable --now $TIMERS || die "could not start the timers $TIMERS"

  rm -rf "$PAYLOAD/dist" "$PAYLOAD/wheelhouse"
  touch "$STATE/done"
  systemctl disable swarm-enroll-firstboot.service >/dev/null 2>&1 || true
  log "done: enroll-agent is running; follow it with journalctl -u enroll-agent -f"
}

case "${1:-prepare}" in
  prepare) prepare ;;
  install) install_stage ;;
  *) echo "usage: $0 [prepare|install]" >&2; exit 2 ;;
esac
