"""Errors of the webhook, in two families (see docs/annotations.md, "How errors reach you").

- The request to the webhook is wrong (:class:`ReviewError`): answered with an HTTP 4xx status, so the
  cluster's failurePolicy decides what happens to the pod.
- The pod under admission is wrong (:class:`DenialError`): answered ``allowed: false`` with a message
  that tells its author what to fix.
"""

from __future__ import annotations


class WebhookError(Exception):
    """Base of every error the webhook raises on purpose."""


class ReviewError(WebhookError):
    """The AdmissionReview itself is malformed: HTTP 4xx, never a denial."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class DenialError(WebhookError):
    """The pod asks for something we refuse: ``allowed: false`` with this message."""

    def __init__(self, message: str, *, code: int = 400) -> None:
        super().__init__(message)
        self.code = code
