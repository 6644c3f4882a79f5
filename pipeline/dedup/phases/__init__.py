"""Cross-shard deduplication as resumable distributed phases: the steps' ``prepare``/``load``.

One module per idea:

* :mod:`~pipeline.dedup.phases.store`: resumable on-disk units (atomic files, done
  markers, the job's configuration record) and :func:`~pipeline.dedup.phases.store.run_phase`,
  which fans a phase's unfinished units out through an
  :class:`~pipeline.execution.executor.Executor`;
* :mod:`~pipeline.dedup.phases.shuffle`: document refs, map units, routing rows to
  partitions and shard groups, the final per-shard decision files and
  :class:`~pipeline.dedup.phases.shuffle.ShardDecisions`;
* :mod:`~pipeline.dedup.phases.exact`, :mod:`~pipeline.dedup.phases.lines`,
  :mod:`~pipeline.dedup.phases.minhash`: each job's ``prepare_*`` (run in the driver) and
  ``load_*`` (one shard's decisions, in its task).

No process ever holds more than one batch of documents, one map task's rows, one
partition of the shuffle, or (for MinHash) one partition of the duplicate edges
(:mod:`~pipeline.dedup.phases.components`). Tests make a chosen unit
fail with :func:`pipeline.execution.faults.inject_failures`; phases call
:func:`pipeline.execution.faults.checkpoint` after a unit wrote its outputs and before it
marks itself done.
"""
