"""The approval race, over the real TLS server: while the real second manager waits for
the admin, a stranger claims its name with a fresh key. Approving by name picks neither;
the admin picks the real Pi by its key's fingerprint, and only it gets a grant."""

from __future__ import annotations

from agent.wire.keys import fingerprint, thumbprint

from .conftest import LiveController


def test_an_impostor_cannot_win_a_manager_by_its_name(live_controller: LiveController) -> None:
    real, impostor = live_controller.agent(), live_controller.agent()
    try:
        mine = real.enroll({"hostname": "mgr-2", "hardware_id": "00000000a1b2c302"})
        theirs = impostor.enroll({"hostname": "mgr-2", "hardware_id": "00000000a1b2c302"})
        assert (mine["status"], theirs["status"]) == ("pending", "pending")
        refused = live_controller.admin("POST", "/v1/nodes/mgr-2/approve")
        assert refused.status_code == 409 and refused.json()["error"] == "ambiguous"
        shown = {c["fingerprint"] for c in refused.json()["claimants"]}
        real_fp = fingerprint(thumbprint(real.key))
        assert shown == {real_fp, fingerprint(thumbprint(impostor.key))}
        approved = live_controller.admin("POST", "/v1/nodes/mgr-2/approve",
                                         json={"fingerprint": real_fp})
        assert approved.status_code == 200 and approved.json()["id"] == mine["id"]
        assert real.poll(mine["id"]).get("grant")
        assert "grant" not in impostor.poll(theirs["id"])
    finally:
        real.close()
        impostor.close()
