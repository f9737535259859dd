"""The controller tests' API stand-in (with the controller's RBAC enforced), for the certificate events."""

from tests.controller.test_controller import _nothing_forbidden, api  # noqa: F401 (fixtures)
