"""The fault suite (issue 19): real faults caused on the real services, and every test ending
with the target compared row for row, and the error files byte for byte, with a clean run of the
same input (``support.assert_same_as_clean``).

- ``test_database_faults``: PostgreSQL restarted mid-load; the loading backend terminated
  mid-COPY of a corrected file;
- ``test_sftp_faults``: the sshd process sending the file killed mid-download; sshd down at the
  start of a run, then up;
- ``test_smtp_faults``: SMTP down: the run lands, its e-mail waits in ``logs/unsent`` and goes
  out once with the next run;
- ``test_kill_runs``: ``kill -9`` of a ``dagster job execute`` process three times in a row in
  each step, then a normal run;
- ``test_full_folders``: a full (tmpfs) or read-only (bind mount) folder under ETL_HOME.

Run it alone with ``pytest etl_assets_tests/reliability`` (about 2-3 minutes on two cores);
``RELIABILITY_LONG=1`` kills ten times per step, at random moments of each step.
"""
