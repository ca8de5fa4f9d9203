import pytest

from tests.ledger.builders import Events, Run


@pytest.fixture
def run() -> Run:
    return Run()


@pytest.fixture
def ev() -> Events:
    return Events("acct-1")
