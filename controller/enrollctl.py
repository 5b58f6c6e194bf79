"""`enrollctl`: the admin's command line, a thin client of the controller's admin API.

Connection settings come from flags, then the environment (ENROLLCTL_URL,
ENROLLCTL_PIN, ENROLLCTL_TOKEN), then a config file (~/.config/swarm-enroll/
enrollctl.toml with keys url, pin, token, ca_file).
"""

from __future__ import annotations

import datetime
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.wire.errors import WireError
from controller.adminclient import AdminClient, discover, pinned_from
from controller.state import NODE_FILTERS
from controller.tokens import MAX_TTL

DEFAULT_CONFIG = Path("~/.config/swarm-enroll/enrollctl.toml")
_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def _settings(config_file: Path, chosen: bool) -> dict[str, str]:
    """The config file's settings; a file the user named (`chosen`) must exist, the default
    one need not (a typo in --config would otherwise fall back to other settings)."""
    path = config_file.expanduser()
    if not path.exists():
        if chosen:
            raise click.ClickException(f"{path}: no such config file (without --config and "
                                       f"ENROLLCTL_CONFIG, {DEFAULT_CONFIG} is read if it "
                                       "exists; --config /dev/null reads none)")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    unknown = set(data) - {"url", "pin", "token", "ca_file"}
    if unknown:
        raise click.ClickException(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    return {k: str(v) for k, v in data.items()}


class Context:
    def __init__(self, url: str, pin: str, token: str, ca_file: str, as_json: bool) -> None:
        self.url, self.pin, self.token, self.ca_file = url, pin, token, ca_file
        self.as_json = as_json
        self._client: AdminClient | None = None
        self._several = False

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            urls = [u.strip() for u in self.url.split(",") if u.strip()]
            found = not urls and bool(self.pin)
            if found:  # every manager runs a controller: ask the LAN
                urls, passed_over = pinned_from(discover(self.pin), self.pin)
                for why in passed_over:
                    click.echo(f"(passed over {why})", err=True)
                if not urls:
                    raise click.ClickException(
                        "no controller with this CA pin answered over mDNS; give one with "
                        "--url (or ENROLLCTL_URL)")
            if not urls:
                raise click.ClickException("no controller URL: use --url, ENROLLCTL_URL or "
                                           "'url' in the config file (or --pin alone, to "
                                           "find the controllers over mDNS)")
            self._client = AdminClient(urls, self.token, self.pin,
                                       Path(self.ca_file) if self.ca_file else None)
            self._several = found or len(urls) > 1
        return self._client

    def said_who(self) -> None:
        """With several controllers to choose from, or found over mDNS, say which ones were
        passed over and why (an impostor among them is worth knowing of), and which one
        answered (stderr), its refusal too. When none answered, the error names each."""
        if self._client is not None and self._several and self._client.answered_by:
            for why in self._client.passed_over:
                click.echo(f"(passed over {why})", err=True)
            click.echo(f"(answered by {self._client.answered_by})", err=True)

    def show(self, data: Any, columns: list[str] | None = None) -> None:
        if self.as_json or columns is None:
            click.echo(json.dumps(data, indent=2, sort_keys=False))
            return
        rows = data if isinstance(data, list) else [data]
        click.echo(_table(rows, columns))


def _cell(value: Any) -> str:
    if isinstance(value, float) and value > 1e9:
        return datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _seconds(value: str) -> int:
    match = _DURATION.match(value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration such as 90s, 30m, 12h or 7d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class Group(click.Group):
    """Turns API and connection errors into one line on stderr and exit status 1 (with the
    claimants of an ambiguous name as a table, to choose from)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            if isinstance(ctx.obj, Context):
                ctx.obj.said_who()
            return result
        except WireError as exc:
            if isinstance(ctx.obj, Context):  # a refusal: from which controller
                ctx.obj.said_who()
            claimants = exc.detail.get("claimants")
            if claimants:
                click.echo(_table(claimants, CLAIMANT_COLUMNS), err=True)
                raise click.ClickException(
                    f"{exc.code}: {len(claimants)} Pis claim this name; compare each "
                    "FINGERPRINT with 'enroll-agent id' on the Pi (or its firstboot.log), then "
                    "repeat with --fingerprint FINGERPRINT or the record ID") from None
            raise click.ClickException(f"{exc.code}: {exc.message}") from None


@click.group(cls=Group)
@click.version_option(__version__, prog_name="enrollctl")
@click.option("--url", envvar="ENROLLCTL_URL",
              help="Controller URL(s), https://host:8443, comma-separated (every manager runs "
                   "one; the next is asked when one does not answer or fails the pin). "
                   "Without it, with --pin: found over mDNS.")
@click.option("--pin", envvar="ENROLLCTL_PIN", help="CA pin, sha256:…")
@click.option("--token", envvar="ENROLLCTL_TOKEN", help="Admin token (prefer the env var).")
@click.option("--ca-file", envvar="ENROLLCTL_CA_FILE", help="CA certificate instead of a pin.")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              default=DEFAULT_CONFIG, envvar="ENROLLCTL_CONFIG", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def main(ctx: click.Context, url: str | None, pin: str | None, token: str | None,
         ca_file: str | None, config_file: Path, as_json: bool) -> None:
    """Approve Pis, manage bootstrap tokens and read the audit log."""
    chosen = ctx.get_parameter_source("config_file") != click.core.ParameterSource.DEFAULT
    saved = _settings(config_file, chosen)
    ctx.obj = Context(url or saved.get("url", ""), pin or saved.get("pin", ""),
                      token or saved.get("token", ""), ca_file or saved.get("ca_file", ""),
                      as_json)


NODE_COLUMNS = ["hostname", "state", "role", "kind", "swarm_state", "swarm_role", "stale",
                "fingerprint", "hardware_id", "source", "first_seen", "last_seen", "id"]
CLAIMANT_COLUMNS = ["id", "state", "kind", "fingerprint", "hardware_id", "source",
                    "first_seen", "last_seen"]


@main.group(invoke_without_command=True)
@click.option("--state", type=click.Choice(NODE_FILTERS), metavar="STATE",
              help=f"Only nodes in this state: {', '.join(NODE_FILTERS)}.")
@click.pass_context
def nodes(ctx: click.Context, state: str | None) -> None:
    """List nodes, including Pis only seen over mDNS. FINGERPRINT is the agent key's, as
    'enroll-agent id' shows it on the Pi."""
    if ctx.invoked_subcommand is None:
        ctx.obj.show(ctx.obj.client.nodes(state or ""), NODE_COLUMNS)


def _ref(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("give a hostname or a record id (enr_…)")
    return value


FINGERPRINT_HELP = ("Only the claim whose agent key has this fingerprint ('enroll-agent id' "
                    "on the Pi; at least 8 hex digits).")


@nodes.command("show")
@click.argument("ref", callback=_ref)
@click.option("--fingerprint", default="", help=FINGERPRINT_HELP)
@click.pass_obj
def nodes_show(obj: Context, ref: str, fingerprint: str) -> None:
    """One node (by hostname or id) with its history."""
    obj.show(obj.client.node(ref, fingerprint))


def _decision(action: str, help_text: str) -> None:
    """`enrollctl nodes approve|reject|revoke|forget REF [--fingerprint F] [--reason R]`:
    one shape, four verbs."""

    @nodes.command(action, help=help_text)
    @click.argument("ref", callback=_ref)
    @click.option("--fingerprint", default="", help=FINGERPRINT_HELP)
    @click.option("--reason", default="")
    @click.pass_obj
    def command(obj: Context, ref: str, fingerprint: str, reason: str) -> None:
        obj.show(getattr(obj.client, action)(ref, reason, fingerprint), NODE_COLUMNS)


for _action, _help in (
    ("approve", "Approve a pending Pi (by id, or by hostname when only one Pi claims it)."),
    ("reject", "Reject a pending Pi (by id, or by hostname when only one Pi claims it)."),
    ("revoke", "Drain a node, remove it from the swarm, rotate the worker token; its agent "
               "leaves."),
    ("forget", "Let a revoked or rejected Pi ask again (its record stays in the history)."),
):
    _decision(_action, _help)


@nodes.command("prune")
@click.option("--older-than", default=None,
              help="Remove nodes Down for longer than this (90s, 30m, 12h, 7d; default: the "
                   "controller's stale_after_minutes).")
@click.pass_obj
def nodes_prune(obj: Context, older_than: str | None) -> None:
    """Remove swarm nodes that are Down for too long (never a Ready node or last manager)."""
    removed = obj.client.prune(_seconds(older_than) if older_than is not None else None)
    obj.show(removed, ["hostname", "swarm_node_id"])


TOKEN_COLUMNS = ["id", "description", "hostname_glob", "uses_left", "uses_total", "expires_at",
                 "revoked_at"]


@main.group(invoke_without_command=True)
@click.pass_context
def tokens(ctx: click.Context) -> None:
    """List bootstrap tokens (never their secrets)."""
    if ctx.invoked_subcommand is None:
        ctx.obj.show(ctx.obj.client.tokens(), TOKEN_COLUMNS)


@tokens.command("create")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 90s, 30m, 12h, 7d.")
@click.option("--uses", type=click.IntRange(1, 100_000), default=1, show_default=True)
@click.option("--hostname-glob", default="", help="Only for hostnames matching this glob.")
@click.option("--description", default="")
@click.pass_obj
def tokens_create(obj: Context, ttl: str, uses: int, hostname_glob: str,
                  description: str) -> None:
    """Create a bootstrap token; its secret is printed this once."""
    seconds = _seconds(ttl)
    if not 0 < seconds <= MAX_TTL:
        raise click.BadParameter(f"{ttl!r}: a token lives from 1s to {MAX_TTL // 86400}d",
                                 param_hint="'--ttl'")
    created = obj.client.create_token(seconds, uses, hostname_glob, description)
    if obj.as_json:
        obj.show(created)
        return
    click.echo(created["token"])
    click.echo(f"(token {created['id']}: {uses} use(s), valid for {ttl}; shown only once)",
               err=True)


@tokens.command("revoke")
@click.argument("token_id")
@click.pass_obj
def tokens_revoke(obj: Context, token_id: str) -> None:
    """Revoke a bootstrap token by id."""
    obj.show(obj.client.revoke_token(token_id), TOKEN_COLUMNS)


AUDIT_COLUMNS = ["at", "actor", "action", "hostname", "reason", "count"]


@main.command()
@click.option("--node", default="", help="Node record id.")
@click.option("--hostname", default="")
@click.option("--action", default="", help="e.g. node.approve, token.create")
@click.option("--actor", default="")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_obj
def audit(obj: Context, node: str, hostname: str, action: str, actor: str, limit: int) -> None:
    """The audit log, newest first."""
    obj.show(obj.client.audit(node=node, hostname=hostname, action=action, actor=actor,
                              limit=limit), AUDIT_COLUMNS)


@main.command()
@click.pass_obj
def health(obj: Context) -> None:
    """The controller's health, version and CA pin."""
    obj.show(obj.client.health(), ["status", "version", "ca"])


BASELINE_COLUMNS = ["name", "image", "mode", "tasks", "nodes", "in_sync", "result", "error"]
RESULT_COLUMNS = ["service", "result", "message"]


@main.group(invoke_without_command=True)
@click.pass_context
def baseline(ctx: click.Context) -> None:
    """Baseline services (viz, nginx, ...): their status, or apply the file now."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(baseline_status)


RECENT_FAILURE = 120.0  # seconds: a converged service's failed task older than this is past


def _task_error_matters(service: dict[str, Any]) -> bool:
    """Whether to show a service's newest failed task: while it has not converged, or
    lately (a task that crashes now and then). Right after the demo, nginx's was a task
    the swarm moved off a promoted Pi: shown for good, it looked like a failure."""
    ago = service.get("task_error_s_ago")
    return not service["converged"] or (ago is not None and ago < RECENT_FAILURE)


@baseline.command("status")
@click.pass_obj
def baseline_status(obj: Context) -> None:
    """Each service: desired vs running tasks, its nodes, drift, last result and error."""
    data = obj.client.baseline()
    if obj.as_json:
        obj.show(data)
        return
    click.echo(f"file: {data['file']}")
    if data["file_error"]:
        click.echo(f"FILE ERROR (nothing is applied until it is fixed): {data['file_error']}")
    rows = [{**s, "tasks": f"{s['running_tasks']}/{s['desired_tasks']}",
             "result": (s.get("last_result") or {}).get("result", ""),
             "error": s["error"] or (s["task_error"] if _task_error_matters(s) else "")}
            for s in data["services"]]
    click.echo(_table(rows, BASELINE_COLUMNS))
    for s in data["services"]:
        for change in s["changes"]:
            click.echo(f"{s['name']}: apply would change: {change}")
        for warning in s["warnings"]:
            click.echo(f"{s['name']}: warning: {warning}")
        stuck = s.get("stuck")
        if stuck:
            click.echo(f"{s['name']}: stuck: task {stuck['task']} pending for "
                       f"{stuck['pending_for']:.0f}s although {', '.join(stuck['room_on'])} "
                       f"could run it; {stuck['action']}")
    click.echo("converged" if data["converged"] else "not converged (yet)")


@baseline.command("apply")
@click.option("--file", "file_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Make this the controller's baseline file (validated "
              "first; a bad file changes nothing).")
@click.option("--force", is_flag=True, help="Retry updates that Docker rolled back.")
@click.pass_obj
def baseline_apply(obj: Context, file_path: Path | None, force: bool) -> None:
    """Reconcile now: create what is missing, update what drifted, rescale."""
    text = file_path.read_text(encoding="utf-8") if file_path else None
    try:
        report = obj.client.baseline_apply(text, force)
    except WireError as exc:
        if file_path and exc.code == "baseline_invalid":  # in the user's own file
            exc.message = f"{file_path}: {exc.message}"
        raise
    obj.show(report if obj.as_json else report["results"], None if obj.as_json
             else RESULT_COLUMNS)
    if not report["ok"]:
        raise click.ClickException("some services could not be reconciled (see above)")


CLUSTER_NODE_COLUMNS = ["hostname", "state", "availability", "arch", "reachability", "leader"]
CLUSTER_SERVICE_COLUMNS = ["name", "mode", "running", "desired", "baseline"]


@main.command()
@click.pass_obj
def cluster(obj: Context) -> None:
    """Cluster health: managers, workers, leader, tasks per service, Raft fault tolerance."""
    data = obj.client.cluster()
    if obj.as_json:
        obj.show(data)
        return
    for role in ("managers", "workers"):
        group = data[role]
        states = ", ".join(f"{n} {s}" for s, n in group["by_state"].items()) or "none"
        avail = ", ".join(f"{n} {a}" for a, n in group["by_availability"].items()) or "none"
        click.echo(f"{role.capitalize()}: {group['total']} ({states}; {avail})")
        if group["nodes"]:
            columns = CLUSTER_NODE_COLUMNS if role == "managers" else CLUSTER_NODE_COLUMNS[:4]
            click.echo(_table(group["nodes"], columns))
        click.echo("")
    leader = data["leader"]
    click.echo(f"Leader: {leader['hostname']} ({leader['addr']})" if leader else
               "Leader: none (no quorum?)")
    acting = data.get("acting", "")
    known = data.get("controllers", [])
    serving = ", ".join(c["hostname"] + (" (acts for the cluster)" if c["hostname"] == acting
                                         else "") for c in known if c.get("serving", True))
    quiet = ", ".join(f"{c['hostname']} ({c['heard_s_ago']:.0f} s ago)" for c in known
                      if not c.get("serving", True))
    click.echo(f"Controllers: {serving or 'none heard from'}" +
               (f"; not heard from lately: {quiet}" if quiet else ""))
    click.echo("")
    click.echo("Services:")
    click.echo(_table(data["services"], CLUSTER_SERVICE_COLUMNS))
    click.echo("")
    raft = data["raft"]
    click.echo(f"Raft: {raft['summary']}.")
    click.echo(f"Recommendation: {raft['recommendation']}.")
    click.echo("")
    _show_keeper(data["keeper"])


def _show_keeper(keeper: dict[str, Any]) -> None:
    """The quorum keeper: its settings, its last action and why, what it waits for."""
    if keeper["enabled"]:
        click.echo(f"Quorum keeper: on, keeps {keeper['managers']} managers, may promote "
                   f"{keeper['promote']}, a manager Down for "
                   f"{keeper['down_after_seconds']:.0f} s is lost.")
    else:
        click.echo("Quorum keeper: off (add a [quorum] table to the rules to turn it on).")
    last = keeper["last"]
    if last:
        click.echo(f"Last action: {last['action']}d {last['hostname']} "
                   f"({_cell(last['at'])}, by {last['by']}): {last['reason']}.")
    if keeper["enabled"]:
        since = f" (since {_cell(keeper['since'])})" if keeper["since"] else ""
        click.echo(f"Now: {keeper['waiting']}{since}.")


def _register_flash() -> None:
    """`enrollctl flash`: prepares an SD card's boot partition (controller/flash/)."""
    from controller.flash.cli import flash

    main.add_command(flash)


_register_flash()
