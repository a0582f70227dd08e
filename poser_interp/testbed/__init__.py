"""Testbeds: aligned / alignment-faking model pairs (build, train, verify, remove)."""

from .folder import Testbed as Testbed
from .folder import default_testbed_dir as default_testbed_dir
