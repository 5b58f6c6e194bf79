"""Docker API answers as a manager gives them (API 1.41), with secrets planted where
Docker keeps them: what the filtered viz socket must never pass on."""

from __future__ import annotations

from typing import Any

_CLUSTER = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl"
WORKER_TOKEN = f"{_CLUSTER}-1awxwuwd3z9j1z3puu7rcgdbx"
MANAGER_TOKEN = f"{_CLUSTER}-7p73s1dx5in4tatdymyhg9hu2"
CERT = ("-----BEGIN CERTIFICATE-----\nMIIBajCCARCgAwIBAgIUbYqrLSOSQHoxD8CwG6Bi2PJi9c8w\n"
        "-----END CERTIFICATE-----\n")
KEY = ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIGf4bKbQ5Ltg9NXh0Vv6fD1rUZf1pY6fJvRG\n"
       "-----END EC PRIVATE KEY-----\n")
CONTAINER_ID = "e5d62702a1b48d01c3e02ca1e0212a250801fa8d67caca0b6f35919ebc12f035"
ISSUER_KEY = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEmKmKj8YAbsCL5MHbnN8yfGAn1wEdUzZN"

# Every one of these is a secret, or a detail viz needs not see.
SECRETS = [
    "SWMTKN-1-", "BEGIN CERTIFICATE", "PRIVATE KEY", ISSUER_KEY, "MBMxETAPBgNVBAMTCHN3YXJtLWNh",
    "hunter2", "sk_live_", "AKIAIOSFODNN7EXAMPLE", "secret-id-1", "db_password", "config-id-2",
    "app_conf", "/var/run/docker.sock", "/srv/app/data", "engine-label-secret", "10.0.9.5",
    "awslogs-credentials", "Env", "Secrets", "Configs", "Mounts", "Args", "TLSInfo",
    "Plugins", "PreviousSpec",
]


def _container_spec(env: str) -> dict[str, Any]:
    return {
        "Image": "registry.example/app:1.2@sha256:" + "ab" * 32,
        "Labels": {"com.example.api-key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"},
        "Args": ["--db-password", "hunter2-args"],
        "Env": [f"DB_PASSWORD={env}", "AWS_KEY=AKIAIOSFODNN7EXAMPLE"],
        "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock",
                    "Target": "/var/run/docker.sock"},
                   {"Type": "bind", "Source": "/srv/app/data", "Target": "/data"}],
        "Secrets": [{"File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 292},
                     "SecretID": "secret-id-1", "SecretName": "db_password"}],
        "Configs": [{"File": {"Name": "/etc/app.conf", "UID": "0", "GID": "0", "Mode": 292},
                     "ConfigID": "config-id-2", "ConfigName": "app_conf"}],
        "Isolation": "default",
    }


def _task_template(env: str) -> dict[str, Any]:
    return {
        "ContainerSpec": _container_spec(env),
        "Resources": {"Limits": {}, "Reservations": {}},
        "RestartPolicy": {"Condition": "any", "Delay": 5000000000, "MaxAttempts": 0},
        "Placement": {"Constraints": ["node.role==worker"]},
        "LogDriver": {"Name": "awslogs",
                      "Options": {"awslogs-credentials": "AKIAIOSFODNN7EXAMPLE"}},
        "ForceUpdate": 0,
        "Runtime": "container",
    }


NODES: list[dict[str, Any]] = [{
    "ID": "24ifsmvkjbyhk4ty1m3c3eo3w",
    "Version": {"Index": 8},
    "CreatedAt": "2026-11-20T10:01:02.123456789Z",
    "UpdatedAt": "2026-11-20T10:05:06.123456789Z",
    "Spec": {"Labels": {"pi.model": "zero-w"}, "Role": "manager", "Availability": "active"},
    "Description": {
        "Hostname": "PiLike-01",
        "Platform": {"Architecture": "armv6l", "OS": "linux"},
        "Resources": {"NanoCPUs": 1000000000, "MemoryBytes": 450859008},
        "Engine": {"EngineVersion": "20.10.24",
                   "Labels": {"hint": "engine-label-secret"},
                   "Plugins": [{"Type": "Log", "Name": "awslogs"},
                               {"Type": "Network", "Name": "overlay"}]},
        "TLSInfo": {"TrustRoot": CERT,
                    "CertIssuerSubject": "MBMxETAPBgNVBAMTCHN3YXJtLWNh",
                    "CertIssuerPublicKey": ISSUER_KEY},
    },
    "Status": {"State": "ready", "Addr": "198.18.0.11"},
    "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "198.18.0.11:2377"},
}, {
    "ID": "7dmqfkf3kvnyyxmkbcw9t4m8x",
    "Version": {"Index": 12},
    "CreatedAt": "2026-11-20T10:02:02.123456789Z",
    "UpdatedAt": "2026-11-20T10:06:06.123456789Z",
    "Spec": {"Labels": {}, "Role": "worker", "Availability": "active"},
    "Description": {
        "Hostname": "PiLike-03",
        "Platform": {"Architecture": "armv7l", "OS": "linux"},
        "Resources": {"NanoCPUs": 4000000000, "MemoryBytes": 970000000},
        "Engine": {"EngineVersion": "20.10.24"},
        "TLSInfo": {"TrustRoot": CERT, "CertIssuerSubject": "MBMxETAPBgNVBAMTCHN3YXJtLWNh",
                    "CertIssuerPublicKey": ISSUER_KEY},
    },
    "Status": {"State": "down", "Message": "heartbeat failure", "Addr": "198.18.0.13"},
}]

SERVICES: list[dict[str, Any]] = [{
    "ID": "9mnpnzenvg8p8tdbtq4wvbkcz",
    "Version": {"Index": 19},
    "CreatedAt": "2026-11-20T10:03:00.000000000Z",
    "UpdatedAt": "2026-11-20T10:04:00.000000000Z",
    "Spec": {
        "Name": "app",
        "Labels": {"com.example.api-key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"},
        "TaskTemplate": _task_template("hunter2-env"),
        "Mode": {"Replicated": {"Replicas": 2}},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80,
                                                    "PublishedPort": 8000}]},
    },
    "PreviousSpec": {"Name": "app", "TaskTemplate": _task_template("hunter2-old")},
    "Endpoint": {"Spec": {"Mode": "vip"},
                 "VirtualIPs": [{"NetworkID": "4qvuz4ko70xaltuqbt8956gd1",
                                 "Addr": "10.0.9.5/24"}]},
    "UpdateStatus": {"State": "completed", "Message": "update completed"},
}, {
    "ID": "1g3s3ix3k2xs9kkmp9ynpz9x2",
    "Version": {"Index": 25},
    "Spec": {"Name": "viz", "Mode": {"Global": {}},
             "TaskTemplate": {"ContainerSpec": {"Image": "dockersamples/visualizer:latest",
                                                "Mounts": [{"Type": "bind",
                                                            "Source": "/var/run/docker.sock",
                                                            "Target": "/var/run/docker.sock"}]}}},
}]

TASKS: list[dict[str, Any]] = [{
    "ID": "0kzzo1i0y4jz6027t0k7aezc7",
    "Version": {"Index": 71},
    "CreatedAt": "2026-11-20T10:03:01.000000000Z",
    "UpdatedAt": "2026-11-20T10:03:09.000000000Z",
    "Labels": {},
    "Spec": _task_template("hunter2-task"),
    "ServiceID": "9mnpnzenvg8p8tdbtq4wvbkcz",
    "Slot": 1,
    "NodeID": "7dmqfkf3kvnyyxmkbcw9t4m8x",
    "Status": {"Timestamp": "2026-11-20T10:03:09.000000000Z", "State": "running",
               "Message": "started", "Err": "",
               "ContainerStatus": {"ContainerID": CONTAINER_ID, "PID": 677, "ExitCode": 0},
               "PortStatus": {}},
    "DesiredState": "running",
    "NetworksAttachments": [{"Network": {"ID": "4qvuz4ko70xaltuqbt8956gd1"},
                             "Addresses": ["10.0.9.5/24"]}],
}]

SWARM: dict[str, Any] = {
    "ID": "abajmipo7b4xz5ip2nrla6b11",
    "JoinTokens": {"Worker": WORKER_TOKEN, "Manager": MANAGER_TOKEN},
    "TLSInfo": {"TrustRoot": CERT, "CertIssuerSubject": "MBMxETAPBgNVBAMTCHN3YXJtLWNh",
                "CertIssuerPublicKey": ISSUER_KEY},
    "Spec": {"CAConfig": {"SigningCAKey": KEY, "SigningCACert": CERT}},
}

ANSWERS = {"nodes": NODES, "services": SERVICES, "tasks": TASKS}
