"""schemathesis against the service's own OpenAPI document: generated requests to every
operation (authenticated, a bounded number of examples each) get no 5xx, and every response
matches the schema the API publishes. Skipped where the `schemathesis` dev dependency is absent."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import content_type_conformance, not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from thaw.serve.app import create_app  # noqa: E402
from thaw.serve.auth import Auth, parse_tokens  # noqa: E402
from thaw.serve.service import Service  # noqa: E402
from thaw.serve.store import Store  # noqa: E402

TOKEN = "fuzz-token-0123456789abcdef"
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzzed_service(tiny_stack, tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'thaw.db'}")
    store.init()
    service = Service(tiny_stack, store)
    service.seed_store()
    yield service
    store.close()


@pytest.fixture(scope="module")
def api(fuzzed_service):
    app = create_app(fuzzed_service, Auth(parse_tokens(f"{TOKEN}=read,write,admin")))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_server_error_and_every_response_as_documented(api):
    """Every operation, 25 generated requests each (derandomised, so a failure reproduces)."""
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 8  # items, users, events, recommendations, feedback, history, admin

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        fuzz()
