"""The sync engine: pull, push, field mapping, schedules and workers, for
every installed provider, on the plugin contract alone.

- :mod:`hub.sync.engine`: executes runs (pull pages into the record store with
  the cursor committed alongside, push the tenant's changes back);
- :mod:`hub.sync.store`: the record store and its upserts, deletions and
  conflicts;
- :mod:`hub.sync.mapping`: field mappings and their transforms;
- :mod:`hub.sync.configs`: sync configs, checked when saved;
- :mod:`hub.sync.leases`: one run per connection at a time;
- :mod:`hub.sync.scheduler`: schedules and the API process's background work;
- :mod:`hub.sync.worker`: in-process execution, or procrastinate jobs for
  ``hub worker`` processes on PostgreSQL.
"""
