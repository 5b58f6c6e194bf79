"""Every manager runs a controller: when one does not answer (its Pi died), the admin's
client asks the next one, and says which one answered."""

from __future__ import annotations

import socket

from controller.adminclient import AdminClient

from .conftest import LiveController


def test_the_admin_client_moves_to_a_controller_that_answers(
        live_controller: LiveController) -> None:
    with socket.socket() as closed:  # a port where nobody listens any more
        closed.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{closed.getsockname()[1]}"
    client = AdminClient([dead, live_controller.url], live_controller.admin_token,
                         ca_file=live_controller.ca_file, timeout=5)
    assert client.health()["status"] == "ok"
    assert client.url == live_controller.url  # and it stays with the one that answered
    assert client.nodes() == [n for n in client.nodes()]
