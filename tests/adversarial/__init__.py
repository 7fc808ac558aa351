"""Attack scripts against a real hello-server child process (run by ``nox -s adversarial``).

Each module is runnable (``python -m tests.adversarial.rapid_reset``) and prints
what a bystander saw during the attack, the server's peak RSS and whether it
survived. They take tens of seconds each, so the default test run skips them;
tests/test_transport_limits.py pins each configured limit quickly instead.
"""
