"""The shelves' format and filling (pure logic; the shelves themselves are tested against
real managers in tests/deploy/test_swarm_state.py)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.state.shelves import (
    DOC_PREFIX,
    SHELF_DOCS,
    SHELF_FILL,
    Shelf,
    is_shelf,
    read_shelf,
    shelf_labels,
    shelf_name,
    shelf_number,
    shelved,
)


def as_docker_lists(number: int, labels: dict[str, str], version: int = 7) -> dict[str, Any]:
    return {"ID": "cfg9", "Version": {"Index": version},
            "Spec": {"Name": shelf_name(number), "Labels": labels}}


def test_a_shelf_reads_back_as_written() -> None:
    docs = {"host/pi-1": '{"hostname": "pi-1"}', "host/pi-2": '{"hostname": "pi-2"}'}
    config = as_docker_lists(12, shelf_labels("swarm-enroll.state", docs, closed=True))
    assert is_shelf(config)
    shelf = read_shelf(config)
    assert (shelf.number, shelf.config_id, shelf.version, shelf.closed, shelf.docs) == (
        12, "cfg9", 7, True, docs)
    assert shelf.name == shelf_name(12) and shelf_number(shelf.name) == 12


def test_only_hostnames_go_on_shelves() -> None:
    assert shelved("host/pi-1")
    assert not any(shelved(k) for k in ("token/tok_1", "admin/a", "controller/pi-1",
                                        "lease", "audit/x", "hostname/x"))


@pytest.mark.parametrize("name", ["swarm-enroll-0a1b", "swarm-enroll-shelf-", "other",
                                  "swarm-enroll-shelf-12x", "swarm-enroll-shelf--1"])
def test_other_config_names_have_no_shelf_number(name: str) -> None:
    assert shelf_number(name) is None


@pytest.mark.parametrize("config", [
    {"ID": "c", "Version": {"Index": 1}, "Spec": {"Name": shelf_name(1), "Labels": {}}},
    {"ID": "c", "Version": {}, "Spec": {"Name": shelf_name(1),
                                         "Labels": {"swarm-enroll.shelf": "open"}}},
    {"ID": "c", "Version": {"Index": 1}, "Spec": {"Name": "swarm-enroll-x",
                                                  "Labels": {"swarm-enroll.shelf": "open"}}},
    {"ID": "c", "Version": {"Index": "one"}, "Spec": {
        "Name": shelf_name(1), "Labels": {"swarm-enroll.shelf": "open"}}},
    {"ID": "c"},
])
def test_a_malformed_shelf_is_refused_with_a_value_error(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a swarm-enroll shelf"):
        read_shelf(config)


def test_a_shelf_takes_groups_until_it_holds_its_count_or_its_size() -> None:
    assert Shelf(1).takes_more()
    almost = {f"host/pi-{i}": "x" for i in range(SHELF_DOCS - 1)}
    assert Shelf(1, docs=almost).takes_more()
    full = {**almost, "host/last": "x"}
    assert Shelf(1).full_with(full)
    assert Shelf(1, docs=full).takes_more()  # only its label closes it (the write does)
    big = "x" * (SHELF_FILL // 2)
    assert not Shelf(1).full_with({"host/a": big})
    assert Shelf(1).full_with({"host/a": big, "host/b": big})  # the size alone
    assert not Shelf(1, closed=True).takes_more()


def test_each_document_has_a_label_of_its_own() -> None:
    labels = shelf_labels("swarm-enroll.state", {"host/pi-1": "{}"}, closed=False)
    assert labels == {"swarm-enroll.state": "1", "swarm-enroll.shelf": "open",
                      DOC_PREFIX + "host/pi-1": "{}"}
