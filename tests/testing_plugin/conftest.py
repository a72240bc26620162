"""The test project under project/ is run by test_pytest_plugin.py through pytester, not collected here."""

collect_ignore = ["project"]
