"""Audit mode: a verdict on a pair nobody labelled (`run.audit`), by a rule fixed in advance (`verdict`)."""

from .run import AuditConfig as AuditConfig
from .run import audit as audit
from .verdict import Verdict as Verdict
from .verdict import Vote as Vote

__all__ = ["AuditConfig", "Verdict", "Vote", "audit"]
