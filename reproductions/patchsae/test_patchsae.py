from saebench.repro.pytest_plugin import claim_tests

test_claim = claim_tests(__file__)
