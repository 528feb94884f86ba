"""schemathesis, with every check and every phase, fuzzes the real binaries
against the gateway's own /openapi.json: each request the document calls
valid must be accepted and each one it calls invalid refused, and every
answer must be one the document describes."""

import pathlib
import subprocess
import sys

import pytest
import requests

from conftest import start_stack

SCHEMATHESIS = pathlib.Path(sys.executable).with_name("schemathesis")

# PUT /change-name answers 400 when the new name is the caller's current one,
# and POST /direct when the user is the caller (API.md): both depend on
# state that no schema can describe. The same name rules are fuzzed without
# this allowance at POST /register.
#
# An emoji is limited to 32 bytes of UTF-8 (API.md), which no JSON Schema
# length states: the document bounds it by 32 characters, and a schema-valid
# emoji of 32 multi-byte characters is refused with 400. The bound itself is
# fuzzed: 33 characters are always over 32 bytes.
CONFIG = """\
[[operations]]
include-path = "/change-name"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-path = "/direct"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-path = "/messages/{roomID}/{messageID}/reactions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def stack():
    # The stack of conftest.py, with the login limits per address and per
    # account out of the way, so that the fuzzer's logins reach validation
    # rather than a 429.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOGIN_ATTEMPTS_PER_MINUTE_PER_IP", "1000000")
        patch.setenv("LOGIN_MAX_FAILURES", "1000000")
        with start_stack() as stack:
            yield stack


def test_the_api_answers_as_its_openapi_document_says(stack, tmp_path):
    account = {"Username": "fuzzer", "Email": "fuzzer@example.com", "Password": "fuzzer-password"}
    assert requests.post(f"{stack.base}/register", json=account).status_code == 201
    login = requests.put(f"{stack.base}/login", json={"Email": account["Email"], "Password": account["Password"]})
    assert login.status_code == 200
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{stack.base}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        "1",
        "--max-examples",
        "50",
        # One worker, so that the seed alone decides what is sent in which order.
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {login.json()['token']}",
        "--generation-database",
        "none",
    ]
    # In a directory of its own, which is where schemathesis leaves its files.
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_nul_in_the_login_email_is_a_wrong_credential(stack):
    # PostgreSQL text cannot hold NUL: such an address belongs to no
    # account, rather than failing the query with a 500.
    r = requests.put(f"{stack.base}/login", json={"Email": "a\u0000@example.com", "Password": "password"})
    assert (r.status_code, r.json()) == (401, {"Error": "wrong email or password"})
