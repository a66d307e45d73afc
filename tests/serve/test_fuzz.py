"""`unimp serve` fuzzed from its own OpenAPI description (Schemathesis): requests that fit the description
and requests that break it, for every operation, against a real server on the tiny trained run.

The invariant: no 5xx, every answer's status, content type and body as the description promises, a
request that breaks the description refused with a 4xx, and the server still up (no traceback logged).
Bounded: a fixed number of examples per operation and mode, derandomized (the same cases every run).
"""

from __future__ import annotations

import pytest
import requests

from tests.evaluation.trained import trained_run
from tests.serve.process import ServerProcess

pytestmark = pytest.mark.slow

EXAMPLES = 30  # per operation and mode: about 500 requests, well under a minute on an idle machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # short answers: explain / select generate text, which dominates the time otherwise
    server = ServerProcess(trained_run(tmp_path_factory), "--max-new-tokens", "4", "--max-history", "50").start()
    yield server
    server.stop()


def test_fuzzed_requests_get_no_5xx_and_every_answer_keeps_to_the_description(server):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks
    from schemathesis.generation import GenerationMode

    description = requests.get(server.url + "/v1/openapi.json").json()  # the server's own
    schema = schemathesis.openapi.from_dict(description)
    fuzz_checks = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                   checks.response_schema_conformance, checks.negative_data_rejection]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in description["paths"].values())
    session = requests.Session()
    for operation in operations:
        # invalid requests where there is something to break: a body or a typed query (a path id is any string)
        breakable = len(operation.body) or len(operation.query)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if breakable else (GenerationMode.POSITIVE,):
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                case.call_and_validate(base_url=server.url, session=session, checks=fuzz_checks, timeout=30)

            fuzz()
    assert server.proc.poll() is None, "the server died"
    assert requests.get(server.url + "/healthz").status_code == 200
    assert not [line for line in server.lines if "Traceback" in line or "internal error" in line], "".join(server.lines[-20:])
