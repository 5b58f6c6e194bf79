"""The wire format shared by agent and controller.

Written once and imported by both sides; it must never import Flask, so that
the agent stays small enough for a Pi Zero W.
"""

PROTOCOL_VERSION = "1"
