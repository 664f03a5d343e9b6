"""Chunked jobs and the executors that run them.

A job (``ChunkJob``) says what one chunk of a store reads, what it computes on a device and what it writes;
an executor runs any job over a list of chunks:

* ``run_in_process``: a threaded pipeline in this process (the next chunk is read and the last one written
  on threads while the device computes the current one), bounded queues, first error stops the run;
* ``run_on_dask``: one Dask task per chunk on a cluster from ``engine.distributed.cluster_client``, with
  retries and worker-loss rescheduling.

Both commit chunk by chunk through the job's ``write``, so an interrupted run keeps what it committed and a
resumed one redoes exactly the rest; determinism, resumption and flat memory are properties of the executors,
not of each job. Sampling (``engine.sampler.SamplingJob``) is one such job.
"""
from engine.runtime.job import ChunkJob, RunStats
from engine.runtime.in_process import run_in_process
from engine.runtime.on_dask import run_chunk, run_on_dask

__all__ = ["ChunkJob", "RunStats", "run_chunk", "run_in_process", "run_on_dask"]
