"""What a controller needs before it serves, on any manager of the swarm.

- Its config: a manager that was promoted has no `enroll-controller init` behind it, so
  its controller writes `controller.toml` from what its own Docker daemon says (its
  address in the swarm, its hostname).
- The cluster state, in the swarm's Raft store; a state dir of the first, single-
  controller kind (state.db) is imported once, then renamed `state.db.imported`.
- The CA: the controller that has the key shares it sealed (controller/cakey.py); one
  that has none takes it from there; each issues its own TLS certificate. The first one
  shared is the swarm's CA for good: a controller holding another never replaces it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.wire.keys import pin_of_certificate, write_private
from controller import cakey
from controller.config import ConfigError, ControllerConfig, parse_config
from controller.pki import issue_tls_cert, load_ca
from controller.state import State, Unchanged
from controller.state.sqlite import SQLiteBackend
from controller.swarm import Swarm, SwarmError

log = logging.getLogger(__name__)

IMPORTED_SUFFIX = ".imported"


def config_from_docker(state_dir: Path, swarm: Swarm,
                       settings: dict[str, Any]) -> ControllerConfig:
    """For a manager promoted later, which had no `enroll-controller init`: its
    controller.toml, from what its own Docker daemon says (swarm address, hostname)."""
    try:
        local = swarm.local()
    except SwarmError as exc:
        raise ConfigError(f"{state_dir} has no controller.toml and {exc.message}") from None
    if not local.addr:
        raise ConfigError("the local Docker daemon does not say its swarm address")
    config = parse_config(state_dir, {"advertise_addr": local.addr, "hostname": local.hostname,
                                      **settings})
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)
    (state_dir / "controller.toml").write_text(config.to_toml())
    log.info("this manager had no controller yet: wrote %s (address %s, hostname %s)",
             state_dir / "controller.toml", local.addr, local.hostname)
    return config


def import_single(config: ControllerConfig, state: State) -> Counter[str]:
    """Bring a single-controller state.db into the shared state, once: documents the
    shared state does not have yet are added (a second import adds nothing)."""
    path = config.database
    if not path.exists():
        return Counter()
    backend = SQLiteBackend(path)
    try:
        docs = backend.load_all()
    finally:
        backend.close()
    added: Counter[str] = Counter()
    for stored in docs:
        def add(old: dict | None, body: dict = stored.body) -> dict:
            if old is not None:  # the shared state has it already: never overwritten
                raise Unchanged(None)
            return body
        if state.doc(stored.key) is None:
            state.update_doc(stored.key, add)
            added[stored.key.partition("/")[0]] += 1
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            old.rename(f"{path}{IMPORTED_SUFFIX}{suffix}")
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(added.items())) or "nothing new"
    log.info("imported %s into the swarm's shared state: %s; kept the old file as %s",
             path, summary, f"{path}{IMPORTED_SUFFIX}")
    state.audit("controller", "state.import", f"{path}: {summary}", dict(added))
    return added


def share_ca(config: ControllerConfig, state: State, swarm: Swarm) -> None:
    """Make sure this controller has the CA key and the shared state has it sealed under
    the current manager token (ConfigError if the shared state holds another CA); issue
    this controller's TLS certificate if it has none."""
    manager_token = swarm.manager_token()
    cluster = swarm.local().cluster_id
    shared = state.doc(cakey.KEY)
    if config.ca_key.exists():
        cert, _ = load_ca(config.ca_cert, config.ca_key)
        ours = pin_of_certificate(cert)
        wrapped = cakey.Wrapped.from_json(shared) if shared else None
        if wrapped is not None:
            _refuse_another_ca(config, ours, wrapped.cert_pem)
        if wrapped is None or wrapped.token_id != cakey.token_id(manager_token):
            sealed = cakey.seal(config.ca_cert.read_bytes(), config.ca_key.read_bytes(),
                                manager_token, cluster)
            state.update_doc(cakey.KEY, lambda old: _ours_over(config, ours, old, sealed))
            log.info("sealed the CA key into the shared state (%s)",
                     "first time" if wrapped is None else "the manager token was rotated")
    else:
        if shared is None:
            raise ConfigError("this swarm has no swarm-enroll CA yet: run 'enroll-controller "
                              "init' on the first manager (or start its controller first)")
        wrapped = cakey.Wrapped.from_json(shared)
        try:
            key_pem = cakey.open_sealed(wrapped, manager_token, cluster)
        except cakey.CAKeyError as exc:
            raise ConfigError(str(exc)) from None
        config.ca_cert.write_text(wrapped.cert_pem)
        write_private(config.ca_key, key_pem)
        log.info("took the CA key from the shared state")
    if not config.tls_cert.exists() or not config.tls_key.exists():
        cert, key = load_ca(config.ca_cert, config.ca_key)
        issue_tls_cert(cert, key, config.tls_cert, config.tls_key, config.hostname,
                       [config.advertise_addr])


def _ours_over(config: ControllerConfig, ours: str, old: dict[str, Any] | None,
               sealed: cakey.Wrapped) -> dict[str, Any]:
    """Our sealed CA, in place of the same CA sealed under an older manager token;
    checked again on the store's copy, which another controller may have written first."""
    if old is not None:
        _refuse_another_ca(config, ours, str(old.get("cert_pem", "")))
    return sealed.to_json()


def _refuse_another_ca(config: ControllerConfig, ours: str, shared_pem: str) -> None:
    """The swarm's CA is the one in the shared state: every Pi pins it, so a controller
    that replaced it with its own would split the fleet's trust. ConfigError (logged) if
    this state dir holds another one (`ours`: its pin)."""
    theirs = _pin(shared_pem.encode())
    if ours == theirs:
        return
    message = (f"the swarm's shared state holds the CA {theirs}, but {config.state_dir} "
               f"holds another CA, {ours}: refusing to replace the swarm's CA (its Pis pin "
               "it). If this state dir is left from another swarm or an older CA, move "
               "ca.pem, ca-key.pem, tls.pem and tls-key.pem out of it and start again: the "
               "controller then takes the swarm's CA")
    log.error("%s", message)
    raise ConfigError(message)


def _pin(cert_pem: bytes) -> str:
    try:
        return pin_of_certificate(x509.load_pem_x509_certificate(cert_pem))
    except ValueError:
        return "(an unreadable certificate)"


def forget_keys(config: ControllerConfig) -> None:
    """This node is no longer a manager: the CA key and this controller's TLS key leave
    it (a worker must not hold them; a lost card must not give them away). The sealed CA
    key stays in the managers' shared state, and a promotion opens it again."""
    for path in (config.ca_key, config.tls_key, config.tls_cert):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    log.warning("removed the CA key and this controller's TLS key from %s", config.state_dir)


def reseal_if_rotated(config: ControllerConfig, state: State, swarm: Swarm) -> None:
    """For the acting controller: the manager token may have been rotated since."""
    shared = state.doc(cakey.KEY)
    token = swarm.manager_token()
    if shared and cakey.Wrapped.from_json(shared).token_id != cakey.token_id(token):
        share_ca(config, state, swarm)
        state.audit("controller", "ca.reseal", "the manager join token was rotated",
                    {"at": time.time()})
