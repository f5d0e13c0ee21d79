"""Renderers of an :class:`~framework.audit.report.AuditReport`: terminal text, JSON, HTML."""
